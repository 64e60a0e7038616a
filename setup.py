"""Build of fastinit's native code.

Always: the pybind11 module ``fastinit._C`` (C++ CPU backend, its own thread pool, -O3).
With a CUDA toolkit: the pybind11 module ``fastinit._cuda`` (the CUDA kernels of csrc/cuda,
compiled by nvcc into an object linked into the extension, with the CUDA runtime linked
statically so that only the driver is needed at run time). A separate module, so ``_C`` always
loads even where ``_cuda`` cannot.
With torch installed in the build environment: the pybind11 module ``fastinit._C_tensor``
(csrc/torch: the drop-in call's entry point that takes torch tensors and generators), compiled
against that torch's headers and linked to its libraries (c10, torch_cpu, torch_python), stamped
with its version; fastinit loads it only under that exact torch. Optional: without torch it is
skipped with a note, and a failing compile warns and leaves it out.

Environment (read here, never from sys.argv, so that ``pip install`` works):
  FASTINIT_CUDA          auto (default): build the CUDA module when nvcc is found, else warn and
                         build CPU-only; 1: require it (no nvcc, or a failing CUDA compile, fails
                         the build); 0: CPU-only.
  CUDA_HOME, CUDA_PATH   the toolkit to use (else nvcc on PATH, else /usr/local/cuda).
  TORCH_CUDA_ARCH_LIST   GPU architectures, e.g. "8.0;9.0+PTX" (default: that).

Only ``_C_tensor`` links against libtorch. This file never imports torch: it finds torch's
directories with importlib and reads its version and C++ ABI in a subprocess (pip's isolated
build environment has no torch: ``pip install --no-build-isolation`` builds ``_C_tensor``).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import warnings

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup
from setuptools.errors import CompileError, LinkError

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")

# ---------------------------------------------------------------------------------------------
# Compile flags, all of them here. Floating-point contraction is off everywhere: every fma in
# csrc/ is explicit, so the numbers depend neither on the instruction set nor on CPU vs GPU.
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
# `#pragma omp simd` loops only: the CPU backend's threads are its own, no OpenMP runtime is linked.
OPENMP_SIMD_FLAGS = ["-fopenmp-simd"]
DARWIN_CXX_FLAGS = ["-O3", "-Xpreprocessor", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno"]
# --fmad=false: no contraction on the device; IEEE division and square root and no
# flush-to-zero (the defaults, spelled out) keep the device's fp32 results equal to the CPU's.
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "--fmad=false",
    "-ftz=false",
    "-prec-div=true",
    "-prec-sqrt=true",
    "--threads=0",  # compile the architectures in parallel
    "-Xcompiler=-fPIC",
    "-Xcompiler=-ffp-contract=off",
]
CUDA_LINK_LIBRARIES = ["cudart_static", "dl", "rt", "pthread"]
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"  # A100 and H100 code, PTX for later GPUs
CUDA_SOURCES = ["csrc/cuda/fill_cuda.cu"]
CUDA_HEADERS = [
    "csrc/descriptor_buffer.h",
    "csrc/descriptor_check.h",
    "csrc/cuda/fill_chunk.cuh",
    "csrc/cuda/fill_cuda.h",
    "csrc/cuda/launch_table.h",
    "csrc/fastinit/distributions.h",
    "csrc/fastinit/fill.h",
    "csrc/fastinit/philox.h",
]

# Where a toolkit is looked for when neither CUDA_HOME nor CUDA_PATH is set and nvcc is not on
# PATH (a module-level name so tests can point it elsewhere).
DEFAULT_CUDA_HOMES = ("/usr/local/cuda",)

CUDA_MODE_ENV = "FASTINIT_CUDA"


class CudaBuildError(RuntimeError):
    """The CUDA module was required (FASTINIT_CUDA=1) and cannot be built."""


def cuda_mode(environ=os.environ) -> str:
    """'auto', '1' or '0' from FASTINIT_CUDA."""
    raw = environ.get(CUDA_MODE_ENV, "auto").strip().lower()
    aliases = {"": "auto", "auto": "auto", "1": "1", "on": "1", "true": "1", "yes": "1",
               "0": "0", "off": "0", "false": "0", "no": "0"}
    if raw not in aliases:
        raise CudaBuildError(
            f"{CUDA_MODE_ENV}={environ.get(CUDA_MODE_ENV)!r} is not one of auto, 1, 0"
        )
    return aliases[raw]


def find_nvcc(environ=os.environ):
    """(nvcc path, where it was found) or (None, the places looked in)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = environ.get(var)
        if home:
            # An explicit toolkit is used or nothing: falling back elsewhere would hide a typo.
            nvcc = os.path.join(home, "bin", "nvcc")
            if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
                return nvcc, f"{var}={home}"
            return None, f"{var}={home} (no executable bin/nvcc there)"
    nvcc = shutil.which("nvcc", path=environ.get("PATH", ""))
    if nvcc:
        return nvcc, "PATH"
    for home in DEFAULT_CUDA_HOMES:
        candidate = os.path.join(home, "bin", "nvcc")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate, home
    looked = ["CUDA_HOME and CUDA_PATH (unset)", "PATH"] + [f"{h}/bin" for h in DEFAULT_CUDA_HOMES]
    return None, ", ".join(looked)


def cuda_arch_flags(arch_list=None) -> list:
    """nvcc -gencode flags for a TORCH_CUDA_ARCH_LIST value such as "8.0;9.0+PTX" (entries split
    on ';', ',' or spaces; "9.0a" style suffixes kept; "+PTX" also embeds that PTX)."""
    if arch_list is None or not arch_list.strip():
        arch_list = DEFAULT_CUDA_ARCH_LIST
    flags = []
    for entry in re.split(r"[;,\s]+", arch_list.strip()):
        if not entry:
            continue
        match = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", entry, flags=re.IGNORECASE)
        if not match:
            raise CudaBuildError(
                f"TORCH_CUDA_ARCH_LIST entry {entry!r} is not of the form 8.0, 9.0a or 9.0+PTX "
                f"(whole value: {arch_list!r})"
            )
        major, minor, suffix, ptx = match.groups()
        if int(major) < 7:
            raise CudaBuildError(
                f"TORCH_CUDA_ARCH_LIST entry {entry!r}: the fill kernels need sm_70 (Volta) or "
                f"newer, whose 32 KB of kernel arguments carry the descriptor table"
            )
        arch = f"{major}{minor}{suffix.lower()}"
        codes = [f"sm_{arch}"] + ([f"compute_{arch}"] if ptx else [])
        flags += ["-gencode", f"arch=compute_{arch},code=[{','.join(codes)}]"]
    if not flags:
        raise CudaBuildError(f"TORCH_CUDA_ARCH_LIST={arch_list!r} names no architecture")
    return flags


def cuda_library_dirs(nvcc: str) -> list:
    """Directories holding libcudart_static.a: those nvcc itself links from, else the usual ones
    under the toolkit (nvcc may be a wrapper script outside its toolkit)."""
    dirs = []
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
        for line in (out.stdout + out.stderr).splitlines():
            if "LIBRARIES=" in line:
                dirs += [os.path.normpath(d) for d in re.findall(r'-L"?([^"\s]+)"?', line)]
    except (OSError, subprocess.SubprocessError):
        pass
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    dirs += [os.path.join(home, "lib64"), os.path.join(home, "lib"),
             os.path.join(home, "targets", "x86_64-linux", "lib")]
    dirs = list(dict.fromkeys(dirs))
    found = [d for d in dirs if os.path.isfile(os.path.join(d, "libcudart_static.a"))]
    if not found:
        raise CudaBuildError(f"no libcudart_static.a next to {nvcc} (looked in {dirs})")
    return found[:1]


# fastinit._C_tensor's compile flags: torch's headers need C++20 (as torch.utils.cpp_extension
# builds them); pybind11 is torch's own copy under its include directory. -g0: no debug
# information of torch's headers (5 MB of the module's 5.3 MB with Python's default -g).
TENSOR_CALLS_CXX_FLAGS = ["-O2", "-g0", "-std=c++20", "-fvisibility=hidden"]
TENSOR_CALLS_LIBRARIES = ["c10", "torch", "torch_cpu", "torch_python"]
TENSOR_CALLS_HEADERS = [
    "csrc/cpu/fill_range.h",
    "csrc/cpu/plan_cpu.h",
    "csrc/descriptor_check.h",
    "csrc/fastinit/contract_numbers.h",
    "csrc/fastinit/fill.h",
]
# What a subprocess prints of the build environment's torch: its version and C++ ABI.
TORCH_QUERY = "import torch; print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"


def build_torch():
    """(torch's package directory, version, CXX11 ABI flag 0 / 1) of the torch installed in the
    build environment, or (None, why not)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None, "torch is not installed in the build environment"
    root = spec.submodule_search_locations[0]
    if not os.path.isfile(os.path.join(root, "include", "torch", "headeronly", "version.h")) \
            and not os.path.isfile(os.path.join(root, "include", "torch", "version.h")):
        return None, f"torch at {root} has no C++ headers"
    try:
        out = subprocess.run([sys.executable, "-c", TORCH_QUERY], capture_output=True, text=True,
                             timeout=300, check=True)
        version, abi = out.stdout.split()[-2:]
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return None, f"torch at {root} does not import ({exc})"
    return (root, version, int(abi)), None


class TensorCallsExtension(Extension):
    """fastinit._C_tensor: built against one torch; a failing build warns and is left out."""


def tensor_calls_extension():
    """The fastinit._C_tensor extension, or None (with a note) when the build environment has no
    torch."""
    found, why = build_torch()
    if found is None:
        print(f"fastinit: {why}; fastinit._C_tensor (the tensor entry points) is skipped, "
              f"fastinit._C serves every call", flush=True)
        return None
    root, version, abi = found
    lib = os.path.join(root, "lib")
    return TensorCallsExtension(
        "fastinit._C_tensor",
        sources=["csrc/torch/tensor_calls.cpp"],
        include_dirs=[os.path.join(root, "include"),
                      os.path.join(root, "include", "torch", "csrc", "api", "include"), CSRC],
        define_macros=[("FASTINIT_TORCH_BUILD_VERSION", f'"{version}"'),
                       ("_GLIBCXX_USE_CXX11_ABI", str(abi))],
        extra_compile_args=TENSOR_CALLS_CXX_FLAGS,
        library_dirs=[lib],
        runtime_library_dirs=[] if sys.platform == "darwin" else [lib],
        libraries=TENSOR_CALLS_LIBRARIES,
        depends=TENSOR_CALLS_HEADERS,
        language="c++",
    )


class CudaExtension(Pybind11Extension):
    """A pybind11 extension whose .cu sources nvcc compiles to objects linked into it."""

    def __init__(self, *args, cuda_sources=(), nvcc=None, nvcc_flags=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.cuda_sources = list(cuda_sources)
        self.nvcc = nvcc
        self.nvcc_flags = list(nvcc_flags)


def cpu_extension() -> Pybind11Extension:
    darwin = sys.platform == "darwin"
    return Pybind11Extension(
        "fastinit._C",
        sources=["csrc/bindings.cpp", "csrc/cpu/fill_cpu.cpp", "csrc/cpu/fill_range.cpp",
                 "csrc/cpu/thread_pool.cpp"],
        include_dirs=[CSRC],
        extra_compile_args=DARWIN_CXX_FLAGS if darwin else CXX_FLAGS + OPENMP_SIMD_FLAGS,
        cxx_std=17,
    )


def cuda_extension(environ=os.environ):
    """The fastinit._cuda extension, or None for a CPU-only build (FASTINIT_CUDA=0, or auto with
    no toolkit, which warns). FASTINIT_CUDA=1 without a toolkit raises CudaBuildError."""
    mode = cuda_mode(environ)
    if mode == "0":
        return None
    nvcc, where = find_nvcc(environ)
    if nvcc is None:
        message = f"no CUDA compiler (nvcc) found; looked in: {where}"
        if mode == "1":
            raise CudaBuildError(
                f"{CUDA_MODE_ENV}=1 requires the CUDA module, but {message}. Install the CUDA "
                f"toolkit or set CUDA_HOME, or build CPU-only with {CUDA_MODE_ENV}=0."
            )
        warnings.warn(f"fastinit: {message}; building CPU-only (fastinit._cuda is skipped; "
                      f"set {CUDA_MODE_ENV}=1 to require it)")
        return None
    try:
        library_dirs = cuda_library_dirs(nvcc)
    except CudaBuildError as exc:
        if mode == "1":
            raise
        warnings.warn(f"fastinit: {exc}; building CPU-only")
        return None
    return CudaExtension(
        "fastinit._cuda",
        sources=["csrc/cuda/bindings_cuda.cpp"],
        include_dirs=[CSRC],
        extra_compile_args=CXX_FLAGS,
        library_dirs=library_dirs,
        libraries=CUDA_LINK_LIBRARIES,
        depends=CUDA_HEADERS,
        cxx_std=17,
        cuda_sources=CUDA_SOURCES,
        nvcc=nvcc,
        nvcc_flags=NVCC_FLAGS + [f"-I{CSRC}"]
        + cuda_arch_flags(environ.get("TORCH_CUDA_ARCH_LIST")),
    )


class BuildExt(build_ext):
    """build_ext that first compiles a CudaExtension's .cu sources with nvcc. Under
    FASTINIT_CUDA=auto a failing CUDA build warns and leaves the package CPU-only."""

    def build_extension(self, ext):
        if isinstance(ext, TensorCallsExtension):
            try:
                return super().build_extension(ext)
            except (CompileError, LinkError, OSError) as exc:
                warnings.warn(f"fastinit: building {ext.name} failed ({exc}); fastinit._C "
                              f"serves every call")
                return None
        if not isinstance(ext, CudaExtension):
            return super().build_extension(ext)
        try:
            ext.extra_objects = list(ext.extra_objects or []) + self._compile_cuda(ext)
            super().build_extension(ext)
        except (CompileError, LinkError, subprocess.CalledProcessError, OSError) as exc:
            if cuda_mode() == "1":
                raise
            warnings.warn(f"fastinit: building {ext.name} failed ({exc}); continuing CPU-only")

    def _compile_cuda(self, ext) -> list:
        objects = []
        for source in ext.cuda_sources:
            obj = os.path.abspath(
                os.path.join(self.build_temp, "cuda", os.path.splitext(source)[0] + ".o")
            )
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            inputs = [os.path.join(HERE, path) for path in [source] + list(ext.depends)]
            if self.force or not os.path.exists(obj) or any(
                os.path.getmtime(path) > os.path.getmtime(obj) for path in inputs
            ):
                command = [ext.nvcc, "-c", source, "-o", obj] + ext.nvcc_flags
                print(" ".join(command), flush=True)
                subprocess.run(command, check=True, cwd=HERE)
            objects.append(obj)
        return objects


def main():
    ext_modules = [cpu_extension()]
    cuda = cuda_extension()
    if cuda is not None:
        ext_modules.append(cuda)
    tensor_calls = tensor_calls_extension()
    if tensor_calls is not None:
        ext_modules.append(tensor_calls)
    setup(
        packages=["fastinit", "fastinit.backends", "fastinit.kernels", "fastinit.model"],
        package_dir={"fastinit": "src/fastinit"},
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExt},
    )


if __name__ == "__main__":
    main()
