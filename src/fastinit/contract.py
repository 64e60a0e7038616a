"""Host side of the random-number contract (DESIGN.md): seeds, streams and the per-tensor
parameters every backend receives. The device side is csrc/fastinit/*.h (C++ and CUDA),
kernels/ (Triton) and backends/reference.py (NumPy, the executable form of the contract).
"""
from __future__ import annotations

import hashlib
import math
from enum import IntEnum

import numpy as np
import torch

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85

# Below this mirrored upper bound, Giles' fp32 erfinv is outside its fitted range (p < ~1e-8).
FP32_TRUNC_NORMAL_MIN_BETA = -5.0

U64_MASK = (1 << 64) - 1


class Distribution(IntEnum):
    CONSTANT = 0
    UNIFORM = 1
    NORMAL = 2
    TRUNC_NORMAL = 3
    TRUNC_NORMAL_FP64 = 4


class DType(IntEnum):
    FLOAT32 = 0
    FLOAT64 = 1
    FLOAT16 = 2
    BFLOAT16 = 3


DTYPE_CODES = {
    torch.float32: DType.FLOAT32,
    torch.float64: DType.FLOAT64,
    torch.float16: DType.FLOAT16,
    torch.bfloat16: DType.BFLOAT16,
}


def elements_per_block(dist: int, dtype: torch.dtype) -> int:
    """Contract elements per Philox call: 4 with fp32 math, 2 with fp64 math."""
    if dtype == torch.float64 or dist == Distribution.TRUNC_NORMAL_FP64:
        return 2
    return 4


def stream_for_name(name: str) -> int:
    """Whole-model stream of a parameter or buffer: blake2b-64 of its fully qualified name.

    Args:
        name: the fully qualified name, e.g. ``"layers.3.mlp.up_proj.weight"``.

    Returns:
        The stream, an int in [0, 2**64).
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed <= U64_MASK:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed


def draw_seed(generator: torch.Generator | None) -> int:
    """The seed of one drop-in call, drawn from `generator` (default: the CPU generator)."""
    if generator is None or generator.device.type == "cpu":
        return int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    # An explicit accelerator generator: no device sync; derive from (initial seed, offset) and
    # advance the offset by one Philox block, as torch's own kernels do.
    offset = generator.get_offset()
    generator.set_offset(offset + 4)
    payload = generator.initial_seed().to_bytes(8, "little") + int(offset).to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little") >> 1


def phi(x: float) -> float:
    """Standard normal CDF, Phi(x) = erfc(-x / sqrt2) / 2 (accurate in the lower tail)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def round_to_dtype(value: float, dtype: torch.dtype) -> float:
    return torch.tensor(value, dtype=torch.float64).to(dtype).item()


def _step(value: float, dtype: torch.dtype, up: bool) -> float:
    """The representable neighbour of a representable `value` in `dtype`."""
    if dtype in (torch.float32, torch.float64):
        np_type = np.float32 if dtype == torch.float32 else np.float64
        return float(np.nextafter(np_type(value), np_type(np.inf if up else -np.inf)))
    bits = torch.tensor(value, dtype=dtype).view(torch.int16).item()
    if value == 0.0:
        bits = 0x0001 if up else -0x7FFF  # smallest subnormal of either sign (bit pattern 0x8001)
    elif (value > 0) == up:
        bits += 1
    else:
        bits -= 1
    return torch.tensor(bits, dtype=torch.int16).view(dtype).item()


def round_inward(a: float, b: float, dtype: torch.dtype) -> tuple[float, float]:
    """[a, b] shrunk to the nearest values of `dtype` inside it."""
    lo = round_to_dtype(a, dtype)
    if lo < a:
        lo = _step(lo, dtype, up=True)
    hi = round_to_dtype(b, dtype)
    if hi > b:
        hi = _step(hi, dtype, up=False)
    return lo, hi


def uniform_params(a: float, b: float) -> list[float]:
    # The difference is taken in fp64 on the host; fp32-math backends round both to fp32.
    return [float(b) - float(a), float(a)]


def normal_params(mean: float, std: float) -> list[float]:
    return [float(mean), float(std)]


def trunc_normal_params(
    mean: float, std: float, a: float, b: float, dtype: torch.dtype
) -> tuple[int, list[float]]:
    """(distribution code, parameters) of a truncated normal on [a, b] for `dtype`."""
    alpha = (a - mean) / std
    beta = (b - mean) / std
    sign = 1.0
    if alpha + beta > 0:
        alpha, beta, sign = -beta, -alpha, -1.0
    p_alpha = phi(alpha)
    dp = phi(beta) - p_alpha
    a_in, b_in = round_inward(a, b, dtype)
    dist = Distribution.TRUNC_NORMAL
    if dtype == torch.float64 or beta < FP32_TRUNC_NORMAL_MIN_BETA:
        dist = Distribution.TRUNC_NORMAL_FP64
    return dist, [float(mean), sign * float(std), p_alpha, dp, alpha, beta, a_in, b_in]


def constant_params(value: float, dtype: torch.dtype) -> list[float]:
    # Rounded once, here, exactly as torch's fill_ rounds it, so no backend rounds twice.
    return [round_to_dtype(value, dtype)]
