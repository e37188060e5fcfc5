"""Batch sampling: the global batch is rank-invariant, resumable, and eval never disturbs it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.batches import BatchSampler, EvalBatches

DATA = np.arange(1000, dtype=np.uint16)  # token i at position i: windows are easy to check


def _sampler(**kw: int) -> BatchSampler:
    args = dict(block_size=8, batch_size=3, accumulation_steps=2, seed=7)
    args.update(kw)
    return BatchSampler(DATA, **args)


def test_windows_are_inputs_and_next_tokens() -> None:
    (x, y), _ = _sampler().next_step()
    assert x.shape == y.shape == (3, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # targets are the inputs shifted by one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(3, 7, dtype=torch.int64))


def test_ranks_split_the_same_global_batch() -> None:
    one = _sampler()  # one process, accumulation 2
    ranks = [_sampler(rank=r, world_size=2) for r in range(2)]  # two ranks, 1 micro-batch each
    for _ in range(3):
        single = one.next_step()
        split = [r.next_step() for r in ranks]
        assert len(split[0]) == len(split[1]) == 1
        assert torch.equal(single[0][0], split[0][0][0])
        assert torch.equal(single[1][0], split[1][0][0])
        assert not torch.equal(split[0][0][0], split[1][0][0])  # ranks see different data


def test_state_round_trip_continues_the_stream() -> None:
    a = _sampler()
    a.next_step()
    state = a.state_dict()
    expected = a.next_step()
    b = _sampler(seed=999)
    b.load_state_dict(state)
    got = b.next_step()
    assert all(torch.equal(e[0], g[0]) for e, g in zip(expected, got, strict=True))


def test_eval_batches_are_fixed_and_do_not_touch_training() -> None:
    train = _sampler()
    ev = EvalBatches(DATA, block_size=8, batch_size=3, eval_iters=5, split="val", seed=7)
    first = [x for x, _, _ in ev.weighted()]
    before = train.generator.get_state().clone()
    second = [x for x, _, _ in ev.weighted()]
    assert torch.equal(train.generator.get_state(), before)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.get_rng_state().equal(torch.get_rng_state())  # global RNG untouched as well


def test_eval_batches_spread_over_ranks_with_equal_counts() -> None:
    full = [x for x, _, _ in EvalBatches(DATA, block_size=8, batch_size=2, eval_iters=5,
                                          split="val", seed=1).weighted()]
    parts = [list(EvalBatches(DATA, block_size=8, batch_size=2, eval_iters=5, split="val",
                              seed=1, rank=r, world_size=2).weighted()) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 3  # same number of forwards on each rank
    real = {r + 2 * i: x for r, part in enumerate(parts) for i, (x, _, w) in enumerate(part)
            if w == 1.0}
    assert sorted(real) == [0, 1, 2, 3, 4]
    assert all(torch.equal(real[k], full[k]) for k in range(5))


def test_short_split_and_bad_accumulation_fail_clearly() -> None:
    with pytest.raises(ValueError, match="fewer than block_size"):
        BatchSampler(DATA[:8], block_size=8, batch_size=1, accumulation_steps=1)
    with pytest.raises(ValueError, match="divisible by the number of ranks"):
        BatchSampler(DATA, block_size=8, batch_size=1, accumulation_steps=3, world_size=2)
