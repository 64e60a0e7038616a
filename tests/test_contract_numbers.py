"""The contract's numbers are written once (fastinit.contract_numbers): the generated C++ header
and Triton module must be exactly what the generator writes now, so a number edited in one
place only fails here; and every consumer (the C++ module, the Triton kernels, the host side)
reads the same values."""
import ast
import importlib.util
import os

import pytest
import torch

from fastinit import _C, contract, contract_numbers, plan
from fastinit.backends import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checked_in(relative: str) -> str:
    with open(os.path.join(ROOT, relative)) as f:
        return f.read()


@pytest.mark.parametrize("relative", list(contract_numbers.GENERATED))
def test_generated_files_are_up_to_date(relative, tmp_path):
    contract_numbers.write_generated(str(tmp_path))
    regenerated = (tmp_path / relative).read_text()
    assert regenerated == _checked_in(relative), (
        f"{relative} differs from what src/fastinit/contract_numbers.py generates; run "
        "`python src/fastinit/contract_numbers.py` and rebuild")


@pytest.mark.parametrize("edit", [
    lambda m: m.setitem(contract_numbers.PHILOX, "M0", 0xD2511F55),
    lambda m: m.setitem(contract_numbers.POLY_F32, "LOG_ATANH", [
        *contract_numbers.POLY_F32["LOG_ATANH"][:1], "3.9977e-01",
        *contract_numbers.POLY_F32["LOG_ATANH"][2:]]),
    lambda m: m.setitem(contract_numbers.DISTRIBUTIONS, "NORMAL", 7),
    lambda m: m.setattr(contract_numbers, "MAX_CHUNK_ELEMENTS", 32768),
    lambda m: m.setitem(contract_numbers.F64, "U53_SCALE", "1.1102230246251566e-16"),
], ids=["philox", "polynomial", "distribution_code", "chunk", "u53"])
def test_an_edit_in_one_place_is_caught(edit, monkeypatch, tmp_path):
    """Negative control: change one number in the source only and the comparison above fails
    for at least one generated file."""
    edit(monkeypatch)
    contract_numbers.write_generated(str(tmp_path))
    stale = [r for r in contract_numbers.GENERATED
             if (tmp_path / r).read_text() != _checked_in(r)]
    assert stale


def test_descriptor_layout_is_one():
    assert plan.DESCRIPTOR_FORMAT == contract_numbers.DESCRIPTOR_FORMAT
    assert _C.DESCRIPTOR_SIZE == plan.DESCRIPTOR_SIZE == contract_numbers.DESCRIPTOR_SIZE
    t = torch.empty(3, 5).t()
    (fill,) = plan.descriptor_fills([plan.make_fill(t, contract.Distribution.UNIFORM,
                                                    [1.0, 0.0], 1, 2)])
    packed = fill.pack()
    words = contract_numbers.DESCRIPTOR_WORDS
    as_words = torch.frombuffer(bytearray(packed), dtype=torch.int64)
    assert int(as_words[words["data"]]) == t.data_ptr()
    assert int(as_words[words["ndim"]]) & 0xFFFFFFFF == 2
    assert as_words[words["size"]: words["size"] + 2].tolist() == [5, 3]
    assert as_words[words["global_stride"]: words["global_stride"] + 2].tolist() == [3, 1]


def test_host_side_reads_the_source():
    assert contract.PHILOX_M0 == contract_numbers.PHILOX["M0"]
    assert {d.name: int(d) for d in contract.Distribution} == {
        **contract_numbers.DISTRIBUTIONS, **contract_numbers.HOST_DISTRIBUTIONS}
    # host-only codes are no kernel's: the generated headers leave them out
    assert not set(contract_numbers.DISTRIBUTIONS) & set(contract_numbers.HOST_DISTRIBUTIONS)
    assert "kTruncNormalTail" not in contract_numbers.render_cpp_header()
    assert "TRUNC_NORMAL_TAIL" not in contract_numbers.render_triton_module()
    assert {d.name: int(d) for d in contract.DType} == contract_numbers.DTYPES
    assert reference.ANGLE_STEP_F32 == contract_numbers.f32(contract_numbers.F32["ANGLE_STEP"])


def test_triton_constants_are_the_generated_ones():
    spec = importlib.util.spec_from_file_location(
        "generated_triton_numbers", os.path.join(ROOT, "src", "fastinit", "kernels", "contract_numbers.py"))
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for i, text in enumerate(contract_numbers.POLY_F32["GILES_CENTRAL"]):
        assert getattr(module, f"GILES_CENTRAL_{i}").value == contract_numbers.f32(text)
    assert module.PHILOX_W1.value == contract_numbers.PHILOX["W1"]
    assert module.DESC_WORDS.value * 8 == contract_numbers.DESCRIPTOR_SIZE


def test_setup_py_does_not_import_torch():
    # (it reads torch's version and ABI in a subprocess, for fastinit._C_tensor)
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "torch" not in imported and "pybind11" in imported
