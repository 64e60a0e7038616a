"""The numbers of the random-number contract (docs/contract.md), written once.

Every backend takes them from here: the reference backend and the host side import this module;
the C++ and CUDA code include ``csrc/fastinit/contract_numbers.h`` and the Triton kernels import
``src/fastinit/kernels/contract_numbers.py``, both generated from it and checked in:

    python src/fastinit/contract_numbers.py        # rewrite both generated files

tests/test_contract_numbers.py fails when a generated file differs from what this module
generates. Plain Python (no torch, no numpy), so build scripts can load it by path.
"""
from __future__ import annotations

import os
import struct
import sys

# ---------------------------------------------------------------------------------------------
# Philox4x32-10: round multipliers and Weyl key increments.
PHILOX = {"M0": 0xD2511F53, "M1": 0xCD9E8D57, "W0": 0x9E3779B9, "W1": 0xBB67AE85}

# Distribution and dtype codes of a descriptor.
DISTRIBUTIONS = {"CONSTANT": 0, "UNIFORM": 1, "NORMAL": 2, "TRUNC_NORMAL": 3,
                 "TRUNC_NORMAL_FP64": 4}
# Codes computed on the host only, by one fp64 implementation (backends/reference.py), whatever
# the backend: the dispatcher routes them there and no kernel knows them (not generated).
HOST_DISTRIBUTIONS = {"TRUNC_NORMAL_TAIL": 5}
DTYPES = {"FLOAT32": 0, "FLOAT64": 1, "FLOAT16": 2, "BFLOAT16": 3}

# ---------------------------------------------------------------------------------------------
# Descriptor layout: one FillDescriptor per tensor (or strided part of one), little-endian.
MAX_DIMS = 8
NUM_PARAMS = 8
DESCRIPTOR_FIELDS = [  # (name, C type, count, struct code, comment)
    ("data", "uint64_t", 1, "Q", "address of local element 0"),
    ("numel", "int64_t", 1, "q", "elements to write: the product of size[0 .. ndim)"),
    ("first_index", "int64_t", 1, "q", "contract index of local element 0"),
    ("seed", "uint64_t", 1, "Q", "Philox key"),
    ("stream", "uint64_t", 1, "Q", "Philox counter words 2 and 3"),
    ("dist", "int32_t", 1, "i", "distribution code"),
    ("dtype", "int32_t", 1, "i", "dtype code"),
    ("ndim", "int32_t", 1, "i", "dims in use, 1 .. kMaxDims"),
    ("padding", "int32_t", 1, "i", "zero"),
    ("size", "int64_t", MAX_DIMS, "q", "logical sizes (1 past ndim)"),
    ("stride", "int64_t", MAX_DIMS, "q", "memory steps in elements (0 past ndim)"),
    ("global_stride", "int64_t", MAX_DIMS, "q", "contract-index steps (0 past ndim)"),
    ("param", "double", NUM_PARAMS, "d", "host parameters of the distribution"),
]
DESCRIPTOR_FORMAT = "<" + "".join(f"{n}{code}" if n > 1 else code
                                  for _, _, n, code, _ in DESCRIPTOR_FIELDS)
DESCRIPTOR_SIZE = struct.calcsize(DESCRIPTOR_FORMAT)
# Offset of each field in 8-byte words (the Triton kernel reads descriptors as int64 rows;
# the int32 pairs share a word, the first of a pair in its low half).
DESCRIPTOR_WORDS = {}
_offset = 0
for _name, _ctype, _count, _code, _ in DESCRIPTOR_FIELDS:
    DESCRIPTOR_WORDS[_name] = _offset // 8
    _offset += struct.calcsize("<" + _code) * _count

# ---------------------------------------------------------------------------------------------
# Chunking: work is cut into chunks of at most MAX_CHUNK_ELEMENTS elements (the CPU always uses
# that size; the GPU backends a power of two down to their minimum for small fills). The values
# never depend on the chunking.
MAX_CHUNK_ELEMENTS = 65536
CUDA_MIN_CHUNK_ELEMENTS = 2048   # 256 threads x 8 halves, the largest store group
TRITON_MIN_CHUNK_ELEMENTS = 4096

# ---------------------------------------------------------------------------------------------
# Word-to-float maps and fp32 constants. Decimal strings; fp32 ones are rounded to fp32 once,
# here, and written out exactly.
F32 = {
    "U24_SCALE": "5.9604644775390625e-8",          # 2^-24
    "SQRT2": "1.41421356237309505",
    "LN2": "0.693147180559945309",                 # log_f32: e * ln2
    "ANGLE_STEP": "3.74507028292392878e-7",        # Box-Muller: (pi/2) 2^-22
    "QUARTER_PI": "0.785398163397448310",          # Box-Muller: pi/4
    "GILES_MIN_P": "5.9604644775390625e-8",        # 2^-24: below, the fp64 quantile
    "GILES_CENTRAL_SHIFT": "2.5",                  # w - 2.5 for w < GILES_SPLIT
    "GILES_TAIL_SHIFT": "3.0",                     # sqrt(w) - 3 for w >= GILES_SPLIT
    "GILES_SPLIT": "5.0",
    # trunc_normal on [alpha, beta] with alpha <= -4 and beta >= 4 (standardised): Box-Muller
    # values, the quantile of a second draw only for those outside the interval
    "TRUNC_NORMAL_WIDE_BOUND": "4.0",
}
# Bit patterns of fp32 values.
U32 = {
    "LOG_SPLIT_BITS": 0x3F3504F3,                  # fp32 sqrt(1/2): log_f32's mantissa split
}
# The counter's block-high word of a trunc_normal element's second draw has this bit set
# (block index + 2^63: never a first draw's counter).
SECOND_DRAW_BIT = 0x80000000

F64 = {
    "U53_SCALE": "1.1102230246251565404e-16",      # 2^-53
    "TWO_PI_F64": "6.283185307179586476925",
    # central_quantile_range: Giles' w below this margin under GILES_SPLIT for every p
    "GILES_CENTRAL_MAX_W": "4.9",
    # Below this mirrored upper bound, Giles' fp32 erfinv is outside its fitted range.
    "FP32_TRUNC_NORMAL_MIN_BETA": "-5.0",
}

# Where the planner leaves the ordinary formulas (docs/contract.md, "Extreme parameters"); host
# only, not generated. Powers of two, written as exponents.
PLAN_EXPONENTS = {
    # trunc_normal is a uniform where the density varies by at most 2^-24 (fp32 math) or 2^-53
    # (fp64 outputs) across the interval: log(max / min of the density) below this
    "FLAT_LOG_RATIO_FP32": -24,
    "FLAT_LOG_RATIO_FP64": -53,
    # Phi resolves an interval when it holds at least 2^16 probabilities of the format:
    # Phi(beta) - Phi(alpha) >= Phi(beta) 2^-7 in fp32 (2^23 values per binade), 2^-36 in fp64
    "FP32_PHI_MIN_RELATIVE_WIDTH": -7,
    "FP64_PHI_MIN_RELATIVE_WIDTH": -36,
    # fp64 Phi(beta) below 2^-990 (beta < -37.6) is near fp64's underflow: tail coordinates
    "FP64_PHI_MIN": -990,
    # fp32-math normal: r * std cannot overflow for std <= 2^125 (r <= 5.77 < 8)
    "NORMAL_FP32_MAX_STD": 125,
}

# Polynomials, highest degree first (Horner with one fma per coefficient after the first).
POLY_F32 = {
    # log_f32: log(m) = 2 atanh(s) = 2 s + s^3 LOG_ATANH(s^2), s = (m - 1) / (m + 1), for m in
    # [sqrt(.5), sqrt(2)); minimax for relative error (8.8e-10 with these fp32 coefficients)
    "LOG_ATANH": ["2.987181857e-01", "3.997753848e-01", "6.666677640e-01"],
    # Cephes sinf / cosf on [-pi/4, pi/4]
    "SIN": ["-1.9515295891e-4", "8.3321608736e-3", "-1.6666654611e-1"],
    "COS": ["2.443315711809948e-5", "-1.388731625493765e-3", "4.166664568298827e-2"],
    # M. Giles' single-precision erfinv, central (w < 5) and tail
    "GILES_CENTRAL": ["2.81022636e-08", "3.43273939e-07", "-3.5233877e-06", "-4.39150654e-06",
                      "0.00021858087", "-0.00125372503", "-0.00417768164", "0.246640727",
                      "1.50140941"],
    "GILES_TAIL": ["-0.000200214257", "0.000100950558", "0.00134934322", "-0.00367342844",
                   "0.00573950773", "-0.0076224613", "0.00943887047", "1.00167406",
                   "2.83297682"],
}
POLY_F64 = {
    # Wichura's AS241 (PPND16): numerator and denominator of each region, highest degree first
    "AS241_CENTRAL_NUM": ["2.5090809287301226727e+3", "3.3430575583588128105e+4",
                          "6.7265770927008700853e+4", "4.5921953931549871457e+4",
                          "1.3731693765509461125e+4", "1.9715909503065514427e+3",
                          "1.3314166789178437745e+2", "3.3871328727963666080e+0"],
    "AS241_CENTRAL_DEN": ["5.2264952788528545610e+3", "2.8729085735721942674e+4",
                          "3.9307895800092710610e+4", "2.1213794301586595867e+4",
                          "5.3941960214247511077e+3", "6.8718700749205790830e+2",
                          "4.2313330701600911252e+1", "1.0"],
    "AS241_NEAR_NUM": ["7.74545014278341407640e-4", "2.27238449892691845833e-2",
                       "2.41780725177450611770e-1", "1.27045825245236838258e+0",
                       "3.64784832476320460504e+0", "5.76949722146069140550e+0",
                       "4.63033784615654529590e+0", "1.42343711074968357734e+0"],
    "AS241_NEAR_DEN": ["1.05075007164441684324e-9", "5.47593808499534494600e-4",
                       "1.51986665636164571966e-2", "1.48103976427480074590e-1",
                       "6.89767334985100004550e-1", "1.67638483018380384940e+0",
                       "2.05319162663775882187e+0", "1.0"],
    "AS241_FAR_NUM": ["2.01033439929228813265e-7", "2.71155556874348757815e-5",
                      "1.24266094738807843860e-3", "2.65321895265761230930e-2",
                      "2.96560571828504891230e-1", "1.78482653991729133580e+0",
                      "5.46378491116411436990e+0", "6.65790464350110377720e+0"],
    "AS241_FAR_DEN": ["2.04426310338993978564e-15", "1.42151175831644588870e-7",
                      "1.84631831751005468180e-5", "7.86869131145613259100e-4",
                      "1.48753612908506148525e-2", "1.36929880922735805310e-1",
                      "5.99832206555887937690e-1", "1.0"],
}


def f32(text: str) -> float:
    """The fp32 value of a decimal constant (rounded from its fp64 value), as a Python float."""
    return struct.unpack("<f", struct.pack("<f", float(text)))[0]


def _camel(name: str) -> str:
    return "k" + "".join(part.capitalize() for part in name.lower().split("_")).replace(
        "Bfloat", "BFloat")


def _c_f32(text: str) -> str:
    return f"{f32(text).hex()}f /* {text} */"


def _c_f64(text: str) -> str:
    return f"{float(text).hex()} /* {text} */"


def render_cpp_header() -> str:
    out = [
        "// Generated by src/fastinit/contract_numbers.py; do not edit. The numbers of the",
        "// random-number contract (docs/contract.md) shared with the Triton kernels and the",
        "// reference backend.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace fastinit {",
        "",
    ]
    for name, value in PHILOX.items():
        out.append(f"constexpr uint32_t kPhilox{name} = 0x{value:08X}u;")
    out.append("")
    out.append("enum Distribution : int32_t {")
    out += [f"  {_camel(name)} = {code}," for name, code in DISTRIBUTIONS.items()]
    out.append("};")
    out.append("enum DType : int32_t {")
    out += [f"  {_camel(name)} = {code}," for name, code in DTYPES.items()]
    out.append("};")
    out.append("")
    out.append(f"constexpr int kMaxDims = {MAX_DIMS};")
    out.append(f"constexpr int kNumParams = {NUM_PARAMS};")
    out.append("")
    out.append(f"// struct format {DESCRIPTOR_FORMAT!r} in fastinit.contract_numbers.")
    out.append("struct FillDescriptor {")
    for name, ctype, count, _, comment in DESCRIPTOR_FIELDS:
        dims = f"[{'kMaxDims' if count == MAX_DIMS and name != 'param' else 'kNumParams'}]" \
            if count > 1 else ""
        out.append(f"  {ctype} {name}{dims};  // {comment}")
    out.append("};")
    out.append(f"static_assert(sizeof(FillDescriptor) == {DESCRIPTOR_SIZE}, "
               "\"descriptor size of contract_numbers.py\");")
    out.append("")
    out.append(f"constexpr int64_t kMaxChunkElements = {MAX_CHUNK_ELEMENTS};")
    out.append(f"constexpr int64_t kCudaMinChunkElements = {CUDA_MIN_CHUNK_ELEMENTS};")
    out.append("")
    out += [f"constexpr float {_camel(name)} = {_c_f32(text)};" for name, text in F32.items()]
    out += [f"constexpr uint32_t {_camel(name)} = 0x{value:08X}u;" for name, value in U32.items()]
    out.append(f"constexpr uint32_t kSecondDrawBit = 0x{SECOND_DRAW_BIT:08X}u;")
    out += [f"constexpr double {_camel(name)} = {_c_f64(text)};" for name, text in F64.items()]
    out.append("")
    # One scalar per coefficient (kName0 the highest degree): scalar constexprs are usable in
    # CUDA device code, arrays are not.
    for name, values in POLY_F32.items():
        out += [f"constexpr float {_camel(name)}{i} = {_c_f32(v)};" for i, v in enumerate(values)]
    for name, values in POLY_F64.items():
        out += [f"constexpr double {_camel(name)}{i} = {_c_f64(v)};" for i, v in enumerate(values)]
    out += ["", "}  // namespace fastinit", ""]
    return "\n".join(out)


def render_triton_module() -> str:
    out = [
        '"""Generated by src/fastinit/contract_numbers.py; do not edit. The numbers of the',
        "random-number contract (docs/contract.md) as Triton constexprs; polynomial",
        'coefficients as NAME_i, highest degree first."""',
        "import triton.language as tl",
        "",
    ]
    for name, value in PHILOX.items():
        out.append(f"PHILOX_{name} = tl.constexpr(0x{value:08X})")
    out += [f"{name} = tl.constexpr({code})" for name, code in DISTRIBUTIONS.items()]
    out += [f"DESC_{name.upper()} = tl.constexpr({word})"
            for name, word in DESCRIPTOR_WORDS.items()]
    out.append("# The Triton kernel's table keeps this layout, but its data word holds the element")
    out.append("# offset of local element 0 from the kernel's base pointer (int64, may be negative),")
    out.append("# not an address: the kernel writes only through the tensors it is given.")
    out.append(f"DESC_BASE_OFFSET = tl.constexpr({DESCRIPTOR_WORDS['data']})")
    out.append(f"DESC_WORDS = tl.constexpr({DESCRIPTOR_SIZE // 8})")
    out.append(f"MAX_DIMS = tl.constexpr({MAX_DIMS})")
    out.append(f"MAX_CHUNK_ELEMENTS = {MAX_CHUNK_ELEMENTS}")
    out.append(f"TRITON_MIN_CHUNK_ELEMENTS = {TRITON_MIN_CHUNK_ELEMENTS}")
    out += [f"{name} = tl.constexpr({f32(text)!r})  # {text}" for name, text in F32.items()]
    out += [f"{name} = tl.constexpr(0x{value:08X})" for name, value in U32.items()]
    out.append(f"SECOND_DRAW_BIT = tl.constexpr(0x{SECOND_DRAW_BIT:08X})")
    out += [f"{name} = tl.constexpr({float(text)!r})  # {text}" for name, text in F64.items()]
    for name, values in POLY_F32.items():
        out += [f"{name}_{i} = tl.constexpr({f32(v)!r})  # {v}" for i, v in enumerate(values)]
    for name, values in POLY_F64.items():
        out += [f"{name}_{i} = tl.constexpr({float(v)!r})" for i, v in enumerate(values)]
    out.append("")
    return "\n".join(out)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATED = {
    os.path.join("csrc", "fastinit", "contract_numbers.h"): render_cpp_header,
    os.path.join("src", "fastinit", "kernels", "contract_numbers.py"): render_triton_module,
}


def write_generated(root: str = ROOT) -> list[str]:
    """Write every generated file under `root`; returns their paths."""
    paths = []
    for relative, render in GENERATED.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(render())
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_generated(sys.argv[1] if len(sys.argv) > 1 else ROOT):
        print(written)
