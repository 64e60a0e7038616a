"""Compile every GPU kernel variant fastinit can launch, ahead of time and without a GPU, and
report each one's registers, spills and compile time.

Triton: each variant of src/fastinit/kernels/fill_kernels.py's ``fill_kernel`` (distribution x contiguous or
strided path x output dtype; fp64 maths follow from them) through
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``, with the launch's
options (num_warps, enable_fp_fusion=False, the default tile) and pointer arguments 16-byte
aligned, as a launch from a tensor specialises them. Its PTX is then assembled again by
Triton's bundled ptxas with ``-v`` (the flags of ``PTXAS_FLAGS`` and ``--gpu-name`` from the
PTX's .target line), whose figures the report gives. ``cubin_registers`` is what Triton's own
cubin uses (cuobjdump -res-usage), a cross-check.

CUDA: csrc/cuda/fill_cuda.cu through nvcc with setup.py's NVCC_FLAGS plus ``-Xptxas -v``, one
architecture per compile; every __global__ kernel instance is one row. nvcc keeps the PTX it
assembled (``-keep``), moved into the same folder as fill_cuda_sm<arch>.ptx: the ``ptx`` of
every CUDA row of that architecture, which holds every kernel (``function`` names the row's).

Every compile starts from an empty Triton cache, so compile_s is a real compile; it is CPU
seconds (this process and the ptxas / nvcc it runs), which on an idle machine is the wall-clock
time of the compile and on a shared one does not grow with the other jobs. The PTX of
each Triton variant and of each CUDA compile is kept in a folder made by tempfile.mkdtemp
(prefix fastinit-gpu-static-, printed on stderr, never deleted by this script), so ptxas can
be run on it again afterwards (``run_ptxas``: Triton's ptxas and flags for a Triton row,
nvcc's ptxas with the flags nvcc gave it, ``NVCC_PTXAS_FLAGS``, for a CUDA row).

Usage:
    python scripts/gpu_static_report.py [--json] [--arch 80 90] [--dtype float32 ...]
                                        [--backend triton cuda] [--dist uniform ...]

``--json`` prints a list of objects with the keys backend ("triton" or "cuda"), arch (80 or
90), kernel, dtype (the output dtype), registers, spill_bytes (spill stores plus loads),
compile_s, ptx (the PTX file's path), function (CUDA: the kernel's mangled name in that
file), cubin_registers (Triton) and sass_per_element (Triton: SASS
instructions of the kernel per output element of one tile iteration, see docs/roofline.md).
Without it, a table; ``--roofline``: the paper roofline of docs/roofline.md (markdown). Exits 1
when a compiler is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ARCHS = (80, 90)
DTYPES = ("float32", "bfloat16", "float16", "float64")
TRITON_TYPES = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16", "float64": "*fp64"}
# ptxas flags of Triton's own make_cubin (triton/backends/nvidia/compiler.py) for a kernel
# launched with enable_fp_fusion=False; --regAllocOptLevel=2 where this Triton passes it.
PTXAS_BASE_FLAGS = ["-v", "--fmad=false"]
# The flags nvcc passes to ptxas besides -arch for setup.py's NVCC_FLAGS with -Xptxas -v
# (`nvcc -dryrun` shows them): --fmad=false reaches ptxas as "--fmad false".
NVCC_PTXAS_FLAGS = ["-m64", "-v", "--fmad", "false"]
REGISTER_LIMIT = 128


def triton_bin(name: str, arch: int = 80) -> str | None:
    """Path of a tool bundled with Triton (ptxas, cuobjdump, nvdisasm), or None. For sm_90
    and newer Triton >= 3.8 assembles with ptxas-blackwell (a newer ptxas), as here."""
    try:
        import triton
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    names = [f"{name}-blackwell", name] if (name == "ptxas" and arch >= 90) else [name]
    for candidate in names:
        path = os.path.join(folder, candidate)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def ptxas_flags() -> list[str]:
    """The ptxas flags Triton itself uses for these kernels."""
    import triton.backends.nvidia.compiler as nvidia_compiler

    with open(nvidia_compiler.__file__) as f:
        extra = ["--regAllocOptLevel=2"] if "--regAllocOptLevel=2" in f.read() else []
    return PTXAS_BASE_FLAGS + extra


def parse_ptxas(log: str) -> dict[str, dict]:
    """{mangled function name: {registers, spill_bytes, stack_bytes, entry}} from ptxas -v
    output; entry: a kernel (else a device function it calls)."""
    out: dict[str, dict] = {}
    name = None
    for line in log.splitlines():
        m = re.search(r"(Compiling entry function|Function properties for) '?([\w$.]+)'?", line)
        if m:
            name = m.group(2)
            out.setdefault(name, {"registers": 0, "spill_bytes": 0, "stack_bytes": 0,
                                  "entry": False})
            out[name]["entry"] |= m.group(1).startswith("Compiling")
            continue
        if name is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            out[name]["stack_bytes"] = int(m.group(1))
            out[name]["spill_bytes"] = int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[name]["registers"] = int(m.group(1))
    return out


def setup_module():
    """fastinit's setup.py as a module (its compile flags and nvcc lookup)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import setup

    return setup


def nvcc_ptxas(nvcc: str) -> str:
    """The ptxas that `nvcc` runs (the one beside it in its toolkit)."""
    return os.path.join(os.path.dirname(os.path.realpath(nvcc)), "ptxas")


def run_ptxas(ptx_path: str, arch: int, backend: str = "triton", function: str | None = None
              ) -> dict:
    """{registers, spill_bytes, stack_bytes} of a kernel of a reported PTX file, assembled
    again as its compiler assembled it: a Triton PTX (one kernel) by Triton's ptxas with
    ``ptxas_flags()``; a CUDA PTX (every kernel of fill_cuda.cu) by nvcc's ptxas with
    ``NVCC_PTXAS_FLAGS``, `function` (a row's mangled name) the kernel reported."""
    with open(ptx_path) as f:
        target = re.search(r"^\.target\s+(\w+)", f.read(), re.M).group(1)
    if backend == "triton":
        command = [triton_bin("ptxas", arch), *ptxas_flags(), f"--gpu-name={target}"]
    else:
        command = [nvcc_ptxas(setup_module().find_nvcc()[0]), f"-arch={target}",
                   *NVCC_PTXAS_FLAGS]
    log = subprocess.run([*command, ptx_path, "-o", ptx_path + ".cubin"], capture_output=True,
                         text=True, check=True)
    functions = parse_ptxas(log.stdout + log.stderr)
    (name,) = [n for n, f in functions.items() if f["entry"] and function in (None, n)]
    # spills of the device functions it calls count as the kernel's
    called_spills = sum(f["spill_bytes"] for f in functions.values() if not f["entry"])
    return {**functions[name], "spill_bytes": functions[name]["spill_bytes"] + called_spills}


def sass_instructions(cubin_path: str, arch: int) -> list[str]:
    """The SASS instruction lines of a cubin (cuobjdump -sass), NOPs left out."""
    tool = triton_bin("cuobjdump", arch) or shutil.which("cuobjdump")
    text = subprocess.run([tool, "-sass", cubin_path], capture_output=True, text=True,
                          check=True).stdout
    lines = [ln for ln in text.splitlines() if re.match(r"\s*/\*[0-9a-f]{4,}\*/", ln)]
    return [ln for ln in lines if not re.search(r"\bNOP\b", ln)]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas, nvcc): a compile's cost,
    unlike wall-clock time, does not grow with other jobs on a shared machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def triton_variants(dists):
    from fastinit.contract import Distribution

    for dist in dists:
        for strided in (False, True):
            yield Distribution[dist.upper()], strided


def compile_triton(arch: int, dtype: str, dist, strided: bool, folder: str) -> dict:
    """Compile one variant; return its report row."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastinit.kernels.fill_kernels import fill_kernel
    from fastinit.kernels.launch_table import DEFAULT_CONFIG, f64_math

    f64 = f64_math(int(dist), getattr(torch, dtype))
    name = f"fill_{dist.name.lower()}_{'strided' if strided else 'contiguous'}"
    constexprs = {"TILE": DEFAULT_CONFIG.tile_blocks, "DIST": int(dist), "STRIDED": strided,
                  "F64_MATH": f64, "EXACT_FMA": False}
    signature = {"base_ptr": TRITON_TYPES[dtype], "table_ptr": "*i64", "map_ptr": "*i64",
                 "CHUNK": "i32", **{k: "constexpr" for k in constexprs}}
    aligned = [["tt.divisibility", 16]]
    attrs = {(0,): aligned, (1,): aligned, (2,): aligned, (3,): aligned}
    src = ASTSource(fn=fill_kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    start = cpu_seconds()
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": DEFAULT_CONFIG.num_warps,
                                       "enable_fp_fusion": False})
    seconds = cpu_seconds() - start
    stem = os.path.join(folder, f"{name}_{dtype}_sm{arch}")
    with open(stem + ".ptx", "w") as f:
        f.write(compiled.asm["ptx"])
    with open(stem + ".triton.cubin", "wb") as f:
        f.write(compiled.asm["cubin"])
    figures = run_ptxas(stem + ".ptx", arch)
    cubin = sass_instructions(stem + ".triton.cubin", arch)
    cubin_regs = re.search(r"REG:(\d+)", subprocess.run(
        [triton_bin("cuobjdump", arch), "-res-usage", stem + ".triton.cubin"],
        capture_output=True, text=True).stdout)
    return {
        "backend": "triton", "arch": arch, "kernel": name, "dtype": dtype,
        "registers": figures["registers"], "spill_bytes": figures["spill_bytes"],
        "compile_s": round(seconds, 2), "ptx": stem + ".ptx",
        "cubin_registers": int(cubin_regs.group(1)) if cubin_regs else None,
        "sass_instructions": len(cubin),
        "sass_per_element": round(sass_per_element(cubin, f64, strided), 2),
    }


def sass_per_element(lines: list[str], f64: bool, strided: bool) -> float:
    """SASS instructions per element of one steady-state tile iteration: those inside the
    kernel's tile loop (from the first backward branch's target to the branch; the whole kernel
    when there is none) over the elements one thread writes per iteration (4 * TILE or
    2 * TILE elements over num_warps * 32 threads)."""
    from fastinit.kernels.launch_table import DEFAULT_CONFIG

    addresses = [int(re.match(r"\s*/\*([0-9a-f]+)\*/", ln).group(1), 16) for ln in lines]
    loops = []
    for address, ln in zip(addresses, lines):
        target = re.search(r"\bBRA\b[^;]*?(0x[0-9a-f]+)", ln)
        if target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    if loops:  # the longest backward branch: the tile loop (the rare-tile branches are inside)
        lo, hi = max(loops, key=lambda r: r[1] - r[0])
        count = sum(1 for a in addresses if lo <= a <= hi)
    else:
        count = len(lines)
    per_iteration = (2 if f64 else 4) * DEFAULT_CONFIG.tile_blocks
    threads = 32 * DEFAULT_CONFIG.num_warps
    return count / (per_iteration / threads)


def compile_cuda(arch: int, folder: str) -> list[dict]:
    """nvcc with setup.py's flags and -Xptxas -v for one architecture: one row per kernel. The
    PTX nvcc assembled (kept with -keep) is moved to `folder` as fill_cuda_sm<arch>.ptx."""
    from fastinit.contract import DTYPE_CODES

    fastinit_setup = setup_module()
    nvcc, _ = fastinit_setup.find_nvcc()
    flags = [f for f in fastinit_setup.NVCC_FLAGS if not f.startswith("-Xcompiler")]
    obj = os.path.join(folder, f"fill_cuda_sm{arch}.o")
    keep = tempfile.mkdtemp(prefix=f"nvcc-sm{arch}-", dir=folder)
    source = os.path.join(ROOT, fastinit_setup.CUDA_SOURCES[0])
    command = [nvcc, "-c", source, "-o", obj, *flags, f"-I{fastinit_setup.CSRC}", "-gencode",
               f"arch=compute_{arch},code=sm_{arch}", "-Xptxas", "-v", "-keep", "-keep-dir",
               keep]
    start = cpu_seconds()
    log = subprocess.run(command, capture_output=True, text=True)
    seconds = cpu_seconds() - start
    if log.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.stderr}")
    ptx = os.path.join(folder, f"fill_cuda_sm{arch}.ptx")
    stem = os.path.splitext(os.path.basename(source))[0]
    os.replace(os.path.join(keep, stem + ".ptx"), ptx)
    shutil.rmtree(keep)  # the other intermediates (preprocessed sources: megabytes)
    with open(obj + ".ptxas.log", "w") as f:
        f.write(log.stderr + log.stdout)
    names = {code: str(dtype).replace("torch.", "") for dtype, code in DTYPE_CODES.items()}
    rows = []
    functions = parse_ptxas(log.stderr + log.stdout)
    called_spills = sum(f["spill_bytes"] for f in functions.values() if not f["entry"])
    for mangled, figures in functions.items():
        demangled = subprocess.run(["c++filt", mangled], capture_output=True,
                                   text=True).stdout.strip()
        m = re.search(r"(\w+)<(-?\d+)>\(", demangled)  # ...::fill_kernel<0>(...)
        if not m:
            continue
        rows.append({"backend": "cuda", "arch": arch, "kernel": m.group(1),
                     "dtype": names.get(int(m.group(2)), m.group(2)),
                     "registers": figures["registers"],
                     # spills in device functions (none in a clean build) count for every kernel
                     "spill_bytes": figures["spill_bytes"] + called_spills,
                     "compile_s": round(seconds, 2), "ptx": ptx, "function": mangled})
    return sorted(rows, key=lambda r: (r["kernel"], r["dtype"]))


def report(archs=ARCHS, dtypes=DTYPES, backends=("triton", "cuda"), dists=None,
           folder=None) -> list[dict]:
    """The report rows (see the module docstring)."""
    folder = folder or tempfile.mkdtemp(prefix="fastinit-gpu-static-")
    rows = []
    if "triton" in backends:
        if triton_bin("ptxas") is None:
            raise FileNotFoundError("Triton with its bundled ptxas is not installed")
        os.environ["TRITON_CACHE_DIR"] = os.path.join(folder, "triton-cache")
        dists = dists or ["constant", "uniform", "normal", "trunc_normal", "trunc_normal_fp64"]
        for arch in archs:
            for dtype in dtypes:
                for dist, strided in triton_variants(dists):
                    rows.append(compile_triton(arch, dtype, dist, strided, folder))
    if "cuda" in backends:
        for arch in archs:
            rows += compile_cuda(arch, folder)
    return rows


# Paper roofline (docs/roofline.md): both GH100 parts have 132 SMs at up to 1.98 GHz, and each SM
# issues at most one warp instruction per clock on each of its 4 schedulers (128 thread
# instructions per clock); the HBM write limits are the vendors' peak bandwidths.
GPUS = {"H100 SXM": {"sms": 132, "clock_hz": 1.98e9, "hbm_bytes_s": 3.35e12},
        "H200": {"sms": 132, "clock_hz": 1.98e9, "hbm_bytes_s": 4.8e12}}
THREAD_INSTRUCTIONS_PER_SM_CLOCK = 128
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def roofline(rows: list[dict]) -> str:
    """A markdown table of predicted elements/s per Triton variant and GPU: the lower of the
    issue limit (SMs x clock x 128 / SASS instructions per element) and the HBM write limit
    (bandwidth / bytes per element). Predictions, not measurements."""
    lines = ["| variant | dtype | SASS/elem | " + " | ".join(
        f"{g}: issue limit / HBM limit (G elem/s), bound" for g in GPUS) + " |",
        "|---|---|---|" + "---|" * len(GPUS)]
    for r in rows:
        if r["backend"] != "triton":
            continue
        cells = []
        for g in GPUS.values():
            issue = g["sms"] * g["clock_hz"] * THREAD_INSTRUCTIONS_PER_SM_CLOCK / r["sass_per_element"]
            hbm = g["hbm_bytes_s"] / BYTES[r["dtype"]]
            cells.append(f"{issue / 1e9:,.0f} / {hbm / 1e9:,.0f}, "
                         f"{'memory' if hbm < issue else 'compute'}")
        lines.append(f"| {r['kernel']} sm_{r['arch']} | {r['dtype']} | {r['sass_per_element']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ["backend", "arch", "kernel", "dtype", "registers", "spill_bytes", "compile_s",
            "sass_per_element"]
    lines = [head] + [[str(r.get(k, "")) for k in head] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--roofline", action="store_true",
                        help="print the paper roofline of the Triton rows (markdown)")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--backend", nargs="+", default=["triton", "cuda"],
                        choices=["triton", "cuda"])
    parser.add_argument("--dist", nargs="+", default=None,
                        choices=["constant", "uniform", "normal", "trunc_normal",
                                 "trunc_normal_fp64"])
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="fastinit-gpu-static-")
    print(f"gpu_static_report: PTX and cubins kept in {folder}", file=sys.stderr)
    try:
        rows = report(args.arch, args.dtype, args.backend, args.dist, folder)
    except (FileNotFoundError, ImportError) as exc:
        print(f"gpu_static_report: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else roofline(rows) if args.roofline
          else table(rows))
    bad = [r for r in rows if r["spill_bytes"] or r["registers"] > REGISTER_LIMIT]
    if bad and not args.json:
        print(f"\n{len(bad)} variants spill or use more than {REGISTER_LIMIT} registers",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
