"""Fills of one batch whose memory overlaps (distinct tensors that are views of one storage):
one launch writes all of its fills at once, so the batch is split into phases
(csrc/overlap_phases.h) and the overlap holds the later fill's values, as filling the tensors
one after another leaves it. Checked on the phases themselves, the C++ fill on several threads,
a whole-model pass and the Triton launch."""
import pytest
import torch
from torch import nn

import fastinit
from fastinit import spec
from fastinit.backends import cpu as cpu_backend
from fastinit.backends import overlap_order
from fastinit.contract import Distribution
from fastinit.plan import Fill, pack_descriptors

_C = cpu_backend._C
pytestmark = pytest.mark.skipif(_C is None, reason=f"fastinit._C: {cpu_backend.IMPORT_ERROR}")

# More elements than the C++ fill keeps on the calling thread (4 chunks of 65,536), so that a
# batch of them is shared among threads.
BIG = 5 * 65_536


def uniform_fill(t: torch.Tensor, seed: int, lo: float = -1.0, hi: float = 1.0) -> Fill:
    return Fill(t, Distribution.UNIFORM, (hi - lo, lo, float("inf")), seed)


def phases_of(*tensors: torch.Tensor) -> list:
    return _C.overlap_phases(pack_descriptors([uniform_fill(t, 1) for t in tensors]))


def test_phases_of_disjoint_touching_and_empty_tensors_are_none():
    buf = torch.empty(100)
    assert phases_of(buf[:50], buf[50:], torch.empty(7)) == []  # touching is not overlapping
    assert phases_of(buf[:60], buf[60:60], buf[59:59]) == []  # empty tensors write nothing
    assert phases_of(buf[:10]) == []


def test_phases_order_each_cluster_and_leave_the_rest_in_phase_zero():
    buf = torch.empty(100)
    other = torch.empty(10)
    # chain 0 -- 2 -- 3 (each overlaps the next), 1 alone, 4 == 1's memory again
    phases = phases_of(buf[:20], other, buf[10:30], buf[25:40], other.view(2, 5))
    assert phases == [0, 0, 1, 2, 1]
    # a strided view spans from its first to its last element: columns of one matrix overlap
    m = torch.empty(8, 8)
    assert phases_of(m[:, 0], m[:, 1]) == [0, 1]
    assert phases_of(m[:4], m[4:]) == []


def test_overlap_phases_checks_the_descriptors_first():
    with pytest.raises(ValueError, match="not a whole number"):
        _C.overlap_phases(b"\0" * 3)


def test_overlap_order_groups_fills_per_phase():
    buf = torch.empty(100)
    fills = [uniform_fill(t, 1) for t in (buf[:20], buf[50:], buf[10:30], buf[15:18])]
    assert overlap_order(pack_descriptors(fills), len(fills)) == [[0, 1], [2], [3]]
    assert overlap_order(pack_descriptors(fills[:2]), 2) is None
    assert overlap_order(pack_descriptors(fills[:1]), 1) is None


def expected_in_order(buffer: torch.Tensor, views: list, fill_each) -> torch.Tensor:
    """`buffer` after filling `views` one after another, each on a private copy first."""
    out = torch.full_like(buffer, float("nan"))
    for i, v in enumerate(views):
        private = torch.empty_like(v)
        fill_each(i, private)
        out.as_strided(v.shape, v.stride(), v.storage_offset()).copy_(private)
    return out


CHUNK = 65_536  # elements of the C++ fill's chunk


def overlapping_views(buffer: torch.Tensor) -> list:
    """Views of `buffer` (3 * BIG elements) that overlap: pairs of one chunk each, the second
    of a pair the first's memory again (two threads take the two at once), then longer ones."""
    pairs = [buffer[i * CHUNK: (i + 1) * CHUNK] for i in range(3 * BIG // CHUNK) for _ in range(2)]
    return pairs + [buffer[: 2 * BIG],
                    buffer[2 * BIG - 1000: 2 * BIG],  # inside the last chunk of the one before
                    buffer[BIG:], buffer[BIG // 2: BIG // 2 + 1000],
                    buffer.view(-1, 4)[:, 1]]  # a strided view over all of them


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_cpu_fill_of_overlapping_descriptors_leaves_the_later_values(threads):
    seeds = list(range(11, 11 + len(overlapping_views(torch.empty(3 * BIG)))))

    def each(i, private):
        _C.fill(pack_descriptors([uniform_fill(private, seeds[i])]), 1)

    expected = None
    for _ in range(10):  # threads that raced would leave a different mix each time
        buffer = torch.full((3 * BIG,), float("nan"))
        views = overlapping_views(buffer)
        _C.fill(pack_descriptors([uniform_fill(v, s) for v, s in zip(views, seeds)]), threads)
        if expected is None:
            expected = expected_in_order(buffer, views, each)
        assert torch.equal(buffer, expected)


class Overlapping(nn.Module):
    """Two parameters that are views of one storage, overlapping in BIG // 2 elements, and a
    third of its own."""

    def __init__(self):
        super().__init__()
        storage = torch.full((2 * BIG,), float("nan"))
        self.first = nn.Parameter(storage[: BIG + BIG // 2])
        self.second = nn.Parameter(storage[BIG:])
        self.alone = nn.Parameter(torch.full((BIG,), float("nan")))


@pytest.mark.parametrize("threads", [1, 2])
def test_whole_model_pass_over_overlapping_parameters_is_the_loop_order(threads):
    rules = {"first": spec.uniform(-1, 1), "second": spec.normal(5.0, 0.1),
             "alone": spec.uniform(2, 3)}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = Overlapping()
        fastinit.init_module(model, rules, seed=3)
    finally:
        torch.set_num_threads(previous)
    # the same rules one tensor at a time: the loop a user would write
    expected = Overlapping()
    for name in ("first", "second", "alone"):
        fastinit.init_module(expected, {name: rules[name]}, seed=3)
    shared = model.first.untyped_storage()
    assert shared.data_ptr() == model.second.untyped_storage().data_ptr()
    assert torch.equal(model.second.detach(), expected.second.detach())
    assert torch.equal(model.first.detach(), expected.first.detach())
    assert torch.equal(model.alone.detach(), expected.alone.detach())
    overlap = model.first.detach()[BIG:]
    assert bool((overlap > 4).all()), "the overlap holds the later (normal(5, 0.1)) values"


def test_triton_launch_of_overlapping_fills_leaves_the_later_values():
    """The Triton backend launches one phase after another (under the interpreter on CPU
    tensors where no GPU is present)."""
    from conftest import triton_kernels_or_skip

    _, device = triton_kernels_or_skip()
    from fastinit.backends import triton as triton_backend
    from fastinit.kernels.launch_table import LaunchConfig

    small = LaunchConfig(chunk=256, tile_blocks=32)
    buffer = torch.full((3000,), float("nan"), device=device)
    views = [buffer[:2000], buffer[1000:], buffer[500:1500], buffer.view(-1, 3)[:, 2]]
    seeds = [21, 22, 23, 24]
    # four fills in one cluster: four launches of one kernel each
    assert triton_backend.fill([uniform_fill(v, s) for v, s in zip(views, seeds)], small) == 4

    def each(i, private):
        triton_backend.fill([uniform_fill(private, seeds[i])], small)

    assert torch.equal(buffer, expected_in_order(buffer, views, each))
    disjoint = [buffer[:1000], buffer[1000:]]
    assert triton_backend.fill([uniform_fill(v, s) for v, s in zip(disjoint, seeds)], small) == 1


def test_cuda_launches_one_phase_after_another(monkeypatch):
    """The cuda backend's launches, with the device calls stood in for (no GPU here): fills
    that share memory go to launches of their own, in their order, the others together."""
    import contextlib
    import types

    from fastinit.backends import cuda as cuda_backend

    launched = []
    fake = types.SimpleNamespace(
        launch_by_value=lambda packed, num_sms, stream, index: launched.append(packed))
    monkeypatch.setattr(cuda_backend, "_cuda", fake, raising=False)
    monkeypatch.setattr(cuda_backend, "ARG_TABLE_CAPACITY", 64)  # the launch by value
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: types.SimpleNamespace(multi_processor_count=132))
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda index: types.SimpleNamespace(cuda_stream=0))
    buffer = torch.empty(100)
    fills = [uniform_fill(t, i) for i, t in
             enumerate((buffer[:20], buffer[50:], buffer[10:30], buffer[15:18]))]
    cuda_backend._launch(0, fills)
    assert launched == [pack_descriptors([fills[0], fills[1]]), pack_descriptors([fills[2]]),
                        pack_descriptors([fills[3]])]
    launched.clear()
    cuda_backend._launch(0, fills[:2])
    assert launched == [pack_descriptors(fills[:2])]
