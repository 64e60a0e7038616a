"""Build of fastinit's native code.

Always: the pybind11 module ``fastinit._C`` (C++ CPU backend, OpenMP, -O3). It takes raw
pointers and sizes and does not link against libtorch, and this file never imports torch
(pip builds in an isolated environment without it).
"""
import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_extension():
    # Floating-point contraction is off: every fma in csrc/ is explicit, so the numbers do not
    # depend on which instruction set the compiler picked.
    compile_args = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
    if sys.platform == "darwin":
        compile_args = ["-O3", "-Xpreprocessor", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
    return Pybind11Extension(
        "fastinit._C",
        sources=["csrc/bindings.cpp", "csrc/cpu/fill_cpu.cpp"],
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_compile_args=compile_args,
        extra_link_args=["-fopenmp"] if sys.platform != "darwin" else ["-lomp"],
        cxx_std=17,
    )


setup(
    packages=["fastinit", "fastinit.backends", "fastinit.kernels"],
    package_dir={"fastinit": "src/fastinit", "fastinit.kernels": "kernels"},
    ext_modules=[cpu_extension()],
    cmdclass={"build_ext": build_ext},
)
