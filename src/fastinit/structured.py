"""Executors of the structured initialisers (orthogonal, eye, dirac, sparse): the work that is
more than one fill of the contract, run after their arguments have been planned and checked.

Each takes the fills runner of its caller, `run(fills, target, what)`, which runs fills at once
(also inside a ``fused()`` block, where it logs the write of `target` as `what`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .contract import Distribution, normal_params, uniform_params
from .plan import Fill, make_fill
from .qr import qr_on_one_thread
from .sharding import local_tensor

RunFills = Callable[[Sequence[Fill], Tensor, str], None]


def orthogonal_fill(tensor: Tensor, seed: int, stream: int, run: RunFills,
                    gain: float = 1.0) -> Tensor:
    """Q of the QR of the contract's standard normal (seed, stream) matrix, times gain."""
    tensor = local_tensor(tensor)  # a Replicate DTensor: every rank computes the same matrix
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    work_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    flattened = torch.empty((rows, cols), dtype=work_dtype, device=tensor.device)
    run([make_fill(flattened, Distribution.NORMAL, normal_params(0.0, 1.0), seed, stream)],
        tensor, f"orthogonal(gain={gain:g})")
    if rows < cols:
        flattened.t_()
    q, r = qr_on_one_thread(flattened)
    q *= torch.diag(r, 0).sign()
    if rows < cols:
        q.t_()
    with torch.no_grad():
        tensor.copy_(q.reshape(tensor.shape))
        tensor.mul_(gain)
    return tensor


def eye_fill(tensor: Tensor, seed: int = 0, stream: int = 0, run: RunFills = None) -> Tensor:
    """The identity matrix (no random numbers: `seed`, `stream` and `run` are unused)."""
    local = local_tensor(tensor)
    with torch.no_grad():
        torch.eye(*local.shape, out=local, requires_grad=local.requires_grad)
    return tensor


def dirac_fill(tensor: Tensor, seed: int = 0, stream: int = 0, run: RunFills = None,
               groups: int = 1) -> Tensor:
    """The Dirac delta of each group of channels (no random numbers)."""
    sizes = tensor.size()
    local = local_tensor(tensor)
    out_chans_per_grp = sizes[0] // groups
    min_dim = min(out_chans_per_grp, sizes[1])
    centre = tuple(s // 2 for s in sizes[2:])
    with torch.no_grad():
        local.zero_()
        for g in range(groups):
            for d in range(min_dim):
                local[(g * out_chans_per_grp + d, d) + centre] = 1
    return tensor


def sparse_fill(tensor: Tensor, seed: int, stream: int, run: RunFills, sparsity: float,
                std: float = 0.01) -> Tensor:
    """N(0, std^2) values (stream `stream`), and in each column the ceil(sparsity * rows) rows
    with the smallest contract-uniform keys (stream `stream` + 1) set to zero."""
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    keys = torch.empty((rows, cols), dtype=torch.float32)
    run(  # the keys are read at once, and the zeros written into the normal values
        [
            make_fill(tensor, Distribution.NORMAL, normal_params(0.0, std), seed, stream=stream),
            make_fill(keys, Distribution.UNIFORM, uniform_params(0.0, 1.0), seed,
                      stream=stream + 1),
        ],
        tensor, f"sparse(sparsity={sparsity:g}, std={std:g})",
    )
    if num_zeros:
        zero_rows = keys.argsort(dim=0, stable=True)[:num_zeros].to(tensor.device)
        with torch.no_grad():
            local_tensor(tensor).scatter_(0, zero_rows, 0.0)
    return tensor
