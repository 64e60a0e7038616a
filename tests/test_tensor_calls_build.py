"""The build and the loading rule of the optional module fastinit._C_tensor, wherever it is
built or not: setup.py builds it only against a torch of the build environment (found without
importing torch into setup.py: tests/test_contract_numbers.py), and fastinit refuses a module stamped with another torch."""
from __future__ import annotations

import importlib.util
import os
import types

import pytest
import torch

from fastinit.backends import cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def setup_module():
    spec = importlib.util.spec_from_file_location("fastinit_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_torch_in_the_build_environment_it_is_skipped_with_a_note(setup_module,
                                                                          monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(setup_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert setup_module.tensor_calls_extension() is None
    assert "fastinit._C_tensor (the tensor entry points) is skipped" in capsys.readouterr().out


def test_with_torch_it_is_built_against_that_torch(setup_module):
    ext = setup_module.tensor_calls_extension()
    root = os.path.dirname(torch.__file__)
    assert ext.name == "fastinit._C_tensor"
    assert os.path.join(root, "include") in ext.include_dirs
    assert ext.library_dirs == [os.path.join(root, "lib")]
    assert {"c10", "torch_cpu", "torch_python"} <= set(ext.libraries)
    macros = dict(ext.define_macros)
    assert macros["FASTINIT_TORCH_BUILD_VERSION"] == f'"{torch.__version__}"'
    assert macros["_GLIBCXX_USE_CXX11_ABI"] == str(int(torch._C._GLIBCXX_USE_CXX11_ABI))


def test_another_torch_version_or_abi_is_refused_before_any_call():
    abi = torch._C._GLIBCXX_USE_CXX11_ABI
    assert cpu.tensor_calls_refusal(torch.__version__, abi) is None
    other = cpu.tensor_calls_refusal("2.12.0+cpu", abi)
    assert other == f"built against torch 2.12.0+cpu, running torch {torch.__version__}"
    # the local version label counts: a CUDA build and a CPU build of one release differ
    assert "running torch" in cpu.tensor_calls_refusal(torch.__version__ + "x", abi)
    assert "_GLIBCXX_USE_CXX11_ABI" in cpu.tensor_calls_refusal(torch.__version__, not abi)


def test_a_module_stamped_with_another_torch_is_left_unused(monkeypatch):
    stamped = types.SimpleNamespace(TORCH_BUILD_VERSION="2.11.0+cu128", CXX11_ABI=True,
                                    fill_tensor=None)
    monkeypatch.setattr(cpu.importlib, "import_module", lambda name: stamped)
    module, status = cpu._load_tensor_calls()
    assert module is None
    assert status == f"not loaded: built against torch 2.11.0+cu128, running torch {torch.__version__}"


@pytest.mark.parametrize("error", [ImportError("undefined symbol: _ZN3c10..."),
                                   OSError("libtorch_cpu.so: cannot open shared object file")])
def test_a_module_that_does_not_load_is_left_unused(monkeypatch, error):
    def failing(name):
        raise error

    monkeypatch.setattr(cpu.importlib, "import_module", failing)
    module, status = cpu._load_tensor_calls()
    assert module is None and status.startswith("does not load (") and str(error) in status


def test_a_module_that_was_not_built_says_so(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(cpu.importlib, "import_module", missing)
    assert cpu._load_tensor_calls() == (
        None, "not built (no torch in the build environment, or its compile failed)")
