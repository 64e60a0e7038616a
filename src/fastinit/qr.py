"""The QR decomposition behind orthogonal_, with the same bits at any thread count."""

from __future__ import annotations

import threading

import torch

_one_thread_lock = threading.Lock()


def qr_on_one_thread(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.linalg.qr(matrix)`, on a CPU tensor with torch's intra-op thread count set to 1
    and restored after.

    A CPU QR's last bits depend on the thread count (LAPACK's blocked updates are split among
    the threads), so orthogonal_ takes its QR on one thread, eager or inside `fused()`. The
    count is process-wide: calls take turns under a lock, each restoring the count it found.

    Args:
        matrix: the matrix to decompose.

    Returns:
        `(Q, R)`, as `torch.linalg.qr` returns them.
    """
    if matrix.device.type != "cpu":
        return torch.linalg.qr(matrix)
    with _one_thread_lock:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return torch.linalg.qr(matrix)
        finally:
            torch.set_num_threads(previous)
