"""Shared by the backend tests: the contract's test cases and its comparison rule."""
import numpy as np
import torch

from fastinit.backends import reference
from fastinit.contract import (
    Distribution,
    constant_params,
    normal_params,
    trunc_normal_params,
    uniform_params,
)

# The contract's tolerance on z for normal and trunc_normal, scaled by std; plus one output ulp.
Z_TOLERANCE = 4e-6


def distributions(dtype):
    """name -> (distribution, host parameters) for `dtype`."""
    return {
        "uniform": (Distribution.UNIFORM, uniform_params(-0.75, 1.25)),
        "constant": (Distribution.CONSTANT, constant_params(0.1, dtype)),
        "normal": (Distribution.NORMAL, normal_params(0.5, 2.0)),
        "trunc_normal": trunc_normal_params(0.0, 1.0, -2.0, 2.0, dtype),
        "trunc_tail": trunc_normal_params(0.0, 1.0, 4.0, 5.0, dtype),
        # wide: Box-Muller values, a second draw for those outside (about 3e-5 of them)
        "trunc_wide": trunc_normal_params(0.0, 1.0, -4.0, 4.5, dtype),
        # fp32 path, ~2% of its p below Giles' range (2^-24): those take the fp64 quantile
        "trunc_deep_tail": trunc_normal_params(0.0, 1.0, -7.0, -5.0, dtype),
        "trunc_fp64_path": trunc_normal_params(0.0, 1.0, -8.0, -7.5, dtype),
    }


def std_of(name):
    return 2.0 if name == "normal" else 1.0


def assert_matches_reference(out, ref, name, dtype, z_tolerance=Z_TOLERANCE):
    """Bitwise for uniform and constant; within the contract's tolerance otherwise."""
    out, ref = out.cpu(), ref.cpu()
    assert not torch.isnan(out).any(), f"{name} {dtype}: an element was not written"
    if name in ("uniform", "constant"):
        assert torch.equal(out, ref), f"{name} {dtype}: not bitwise equal to the reference"
        return
    o, r = out.double(), ref.double()
    ulp = torch.finfo(dtype).eps * r.abs().clamp_min(torch.finfo(dtype).tiny)
    bad = (o - r).abs() > z_tolerance * std_of(name) + ulp
    assert not bad.any(), (
        f"{name} {dtype}: {int(bad.sum())} elements beyond tolerance, worst "
        f"{float((o - r).abs().max())}"
    )


def second_draw_indices(params, seed, stream, count=3):
    """The first `count` contract indices (of the first 2^20) whose standard Box-Muller value
    lies outside the wide trunc_normal interval of `params`: the elements that take their
    second draw."""
    words = reference.block_words(np.arange(2**18, dtype=np.uint64), stream, seed)
    z = reference.box_muller_z_f32(words).reshape(-1)
    outside = np.nonzero((z < np.float32(params[4])) | (z > np.float32(params[5])))[0]
    assert len(outside) >= count, "too few second draws in 2^20 elements for this test"
    return [int(i) for i in outside[:count]]


# What a tensor holds before its fill (no fill writes a NaN).
NAN = float("nan")


def strided_layouts(dtype) -> dict:
    """name -> a tensor of `dtype` filled with NaN, for each strided layout a fill of a whole
    tensor must handle: contiguous, transposed, sliced, with a storage offset, channels last,
    0-d, more than one chunk of the CPU backend, 8 dims, a Parameter. Each has a storage of its
    own: one batch may fill them all, and fills of one batch never overlap."""
    return {
        "contiguous": torch.full((33, 17), NAN, dtype=dtype),
        "transposed": torch.full((9, 13), NAN, dtype=dtype).t(),
        "sliced": torch.full((12, 10, 6), NAN, dtype=dtype)[1:10:2, :, 3:],
        "storage offset": torch.full((720,), NAN, dtype=dtype)[5:605].view(20, 30),
        "channels last": torch.full((2, 5, 4, 3), NAN, dtype=dtype).to(
            memory_format=torch.channels_last),
        "0-d": torch.full((), NAN, dtype=dtype),
        "one chunk and more": torch.full((70_001,), NAN, dtype=dtype),
        "8 dims": torch.full((2,) * 8, NAN, dtype=dtype).transpose(0, 7),
        "parameter": torch.nn.Parameter(torch.full((4, 6), NAN, dtype=dtype)),
    }
