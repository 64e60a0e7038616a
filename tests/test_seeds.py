"""A batch of seeds drawn at once equals the seeds of as many calls drawn one by one, and leaves
the generator in the same state: a fused pass may draw its calls' seeds in one batch."""
from __future__ import annotations

import pytest
import torch

import fastinit
from fastinit.contract import draw_seed, draw_seeds, seeds_from


@pytest.mark.parametrize("count", [1, 2, 7, 1000, 100_000])
def test_batch_equals_one_draw_per_call_default_generator(count):
    torch.manual_seed(1234)
    one_by_one = [draw_seed(None) for _ in range(count)]
    state_one_by_one = torch.get_rng_state()
    torch.manual_seed(1234)
    batch = draw_seeds(None, count)
    assert batch == one_by_one
    assert torch.equal(torch.get_rng_state(), state_one_by_one)
    assert len(set(batch)) == count  # distinct seeds: a wrong draw (one value repeated) fails


def test_batch_equals_one_draw_per_call_explicit_generator():
    g = torch.Generator().manual_seed(99)
    one_by_one = [draw_seed(g) for _ in range(50)]
    state = g.get_state()
    g.manual_seed(99)
    assert draw_seeds(g, 50) == one_by_one
    assert torch.equal(g.get_state(), state)


def test_batch_follows_seeds_from():
    g = torch.Generator().manual_seed(5)
    with seeds_from(g):
        batch = draw_seeds(None, 3)
    g.manual_seed(5)
    assert batch == [draw_seed(g) for _ in range(3)]


def test_drop_in_calls_draw_the_batch_seeds():
    """The seeds a run of drop-in calls draws are the batch's: each call's values are those of
    its seed from the batch."""
    torch.manual_seed(7)
    drawn = [fastinit.normal_(torch.empty(5, 4)) for _ in range(3)]
    torch.manual_seed(7)
    for values, seed in zip(drawn, draw_seeds(None, 3)):
        assert torch.equal(values, fastinit.normal_(torch.empty(5, 4), seed=seed))


def test_empty_batch_draws_nothing():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    assert draw_seeds(None, 0) == []
    assert torch.equal(torch.get_rng_state(), state)
