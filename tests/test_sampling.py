"""Sampler: greedy, top-k, top-p, penalties, seeds and logprobs, on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nanollm.config import ConfigError, GenerationConfig
from nanollm.sampling import Sampler, process_batch, row_seed, sample_batch


def cfg(**kw) -> GenerationConfig:
    """Sampling with no filtering unless asked for (GenerationConfig defaults to top_k=200)."""
    return GenerationConfig(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, **kw})


def draws(config: GenerationConfig, logits: torch.Tensor, n: int) -> list[int]:
    """n tokens from one sampler (its RNG advances between draws)."""
    sampler = Sampler(config)
    return [sampler.sample(logits).token for _ in range(n)]


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(50, generator=torch.Generator().manual_seed(0)) * 2  # (V,)


def test_greedy_is_argmax_and_ignores_the_rng(logits: torch.Tensor) -> None:
    a = draws(cfg(temperature=0.0, seed=1), logits, 5)
    b = draws(cfg(temperature=0.0, seed=2), logits, 5)
    assert a == b == [int(logits.argmax())] * 5


def test_top_k_never_leaves_the_k_best(logits: torch.Tensor) -> None:
    top5 = set(torch.topk(logits, 5).indices.tolist())
    seen = set(draws(cfg(top_k=5, temperature=2.0, seed=0), logits, 400))
    assert seen <= top5
    assert len(seen) > 2  # it does sample, not just take the best


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    # 0.5 < 0.7 <= 0.5 + 0.3: the nucleus is tokens {0, 1}
    assert set(draws(cfg(top_p=0.7, seed=0), logits, 300)) == {0, 1}
    # the most likely token is kept even when it alone exceeds p
    assert set(draws(cfg(top_p=0.01, seed=0), logits, 50)) == {0}
    processed = Sampler(cfg(top_p=0.9)).process(logits)
    assert torch.isinf(processed[3]) and torch.isfinite(processed[:3]).all()


def test_top_k_and_top_p_combine(logits: torch.Tensor) -> None:
    out = Sampler(cfg(top_k=10, top_p=0.5, temperature=0.7)).process(logits)
    kept = torch.isfinite(out).nonzero().flatten().tolist()
    assert 1 <= len(kept) <= 10
    assert set(kept) <= set(torch.topk(logits, 10).indices.tolist())


def test_repetition_penalty_hf_semantics() -> None:
    logits = torch.tensor([2.0, -1.0, 3.0, 0.5])
    sampler = Sampler(cfg(repetition_penalty=2.0), prompt_ids=[0, 1])
    sampler.output_ids = [1]
    out = sampler.process(logits)
    # seen tokens 0 (positive: divided) and 1 (negative: multiplied); others untouched
    assert out.tolist() == [1.0, -2.0, 3.0, 0.5]


def test_presence_and_frequency_penalties_count_generated_tokens_only() -> None:
    logits = torch.zeros(5)
    sampler = Sampler(cfg(presence_penalty=0.5, frequency_penalty=0.25), prompt_ids=[0])
    sampler.output_ids = [3, 3, 4]
    out = sampler.process(logits)
    assert out.tolist() == pytest.approx([0.0, 0.0, 0.0, -(2 * 0.25 + 0.5), -(0.25 + 0.5)])


def test_temperature_scales_logits(logits: torch.Tensor) -> None:
    assert torch.allclose(Sampler(cfg(temperature=0.5)).process(logits), logits / 0.5)


def test_same_seed_same_tokens_different_seed_different(logits: torch.Tensor) -> None:
    a = draws(cfg(seed=123), logits, 30)
    assert a == draws(cfg(seed=123), logits, 30)
    assert a != draws(cfg(seed=124), logits, 30)


def test_random_seed_is_recorded_and_reproduces(logits: torch.Tensor) -> None:
    first = Sampler(cfg())
    tokens = [first.sample(logits).token for _ in range(20)]
    assert 0 <= first.seed < 2**63
    assert draws(cfg(seed=first.seed), logits, 20) == tokens


def test_logprobs_are_log_softmax_of_the_processed_distribution(logits: torch.Tensor) -> None:
    sampler = Sampler(cfg(logprobs=True, seed=3))
    out = sampler.sample(logits)
    assert out.logprob == pytest.approx(float(F.log_softmax(logits, -1)[out.token]), abs=1e-5)

    sampler = Sampler(cfg(logprobs=True, seed=3, temperature=0.5, top_k=3))
    out = sampler.sample(logits)
    masked = torch.full_like(logits, -math.inf)
    top = torch.topk(logits, 3).indices
    masked[top] = logits[top] / 0.5
    assert out.logprob == pytest.approx(float(F.log_softmax(masked, -1)[out.token]), abs=1e-5)

    greedy = Sampler(cfg(logprobs=True, temperature=0.0)).sample(logits)
    assert greedy.logprob == pytest.approx(float(F.log_softmax(logits, -1).max()), abs=1e-5)
    assert Sampler(cfg()).sample(logits).logprob is None


def test_batch_helper_matches_one_sampler_per_row(logits: torch.Tensor) -> None:
    configs = [cfg(seed=1, top_k=7), cfg(temperature=0.0), cfg(seed=2, top_p=0.8,
               repetition_penalty=1.3, frequency_penalty=0.4), cfg(seed=3)]
    batch = torch.stack([logits, -logits, logits * 0.5, logits.flip(0)])  # (4, V)
    together = [Sampler(c, prompt_ids=[1, 2]) for c in configs]
    alone = [Sampler(c, prompt_ids=[1, 2]) for c in configs]
    for _ in range(10):
        got = [s.token for s in sample_batch(together, batch)]
        want = [s.sample(row).token for s, row in zip(alone, batch, strict=True)]
        assert got == want
    assert torch.equal(process_batch(together, batch)[1], process_batch([alone[1]], batch[1:2])[0])


def test_batch_logprobs_belong_to_the_rows_that_asked(logits: torch.Tensor) -> None:
    """Greedy rows with and without logprobs, and a sampled row, in one batch: each row gets
    its own log-softmax value (or None), as when sampled alone."""
    configs = [cfg(temperature=0.0), cfg(temperature=0.0, logprobs=True), cfg(seed=4),
               cfg(temperature=0.0, logprobs=True, presence_penalty=1.5)]
    batch = torch.stack([logits, -logits, logits * 0.5, logits.flip(0)])  # (4, V)
    together = sample_batch([Sampler(c) for c in configs], batch)
    alone = [Sampler(c).sample(row) for c, row in zip(configs, batch, strict=True)]
    assert [s.token for s in together] == [s.token for s in alone]
    assert [s.logprob for s in together] == pytest.approx([s.logprob for s in alone], abs=1e-6)
    assert together[0].logprob is None and together[2].logprob is None
    assert together[1].logprob == pytest.approx(float(F.log_softmax(-logits, -1).max()),
                                                abs=1e-6)


def test_top_logprobs_are_the_best_of_the_sampled_distribution(logits: torch.Tensor) -> None:
    """Greedy: the best of log_softmax(logits); plain sampling: of log_softmax(logits / T);
    top-k: of the k kept tokens renormalised, so never more than k."""
    def best(dist: torch.Tensor, n: int) -> list[tuple[int, float]]:
        values, ids = torch.topk(dist, n)
        return list(zip(ids.tolist(), values.tolist(), strict=True))

    def same(got: list[tuple[int, float]] | None, want: list[tuple[int, float]]) -> bool:
        return got is not None and [t for t, _ in got] == [t for t, _ in want] and all(
            abs(a - b) < 1e-5 for (_, a), (_, b) in zip(got, want, strict=True))

    greedy = Sampler(cfg(temperature=0.0, logprobs=True, top_logprobs=3)).sample(logits)
    assert same(greedy.top, best(F.log_softmax(logits, -1), 3))
    assert greedy.top[0] == (greedy.token, greedy.logprob)

    plain = Sampler(cfg(temperature=0.5, logprobs=True, top_logprobs=4, seed=1)).sample(logits)
    assert same(plain.top, best(F.log_softmax(logits / 0.5, -1), 4))

    top_k = Sampler(cfg(top_k=2, logprobs=True, top_logprobs=5, seed=1)).sample(logits)
    kept = torch.full_like(logits, -math.inf)
    two = torch.topk(logits, 2).indices
    kept[two] = logits[two]
    assert same(top_k.top, best(F.log_softmax(kept, -1), 2))

    batch = sample_batch([Sampler(cfg(temperature=0.0, logprobs=True)),
                          Sampler(cfg(temperature=0.0, logprobs=True, top_logprobs=1))],
                         torch.stack([logits, -logits]))
    assert batch[0].top is None
    assert same(batch[1].top, best(F.log_softmax(-logits, -1), 1))


def test_top_logprobs_need_logprobs() -> None:
    with pytest.raises(ConfigError, match="top_logprobs needs logprobs = true"):
        GenerationConfig(top_logprobs=2).validate()


def test_sample_records_output_and_row_seeds_differ(logits: torch.Tensor) -> None:
    sampler = Sampler(cfg(seed=5))
    tokens = [sampler.sample(logits).token for _ in range(3)]
    assert sampler.output_ids == tokens
    assert row_seed(5, 0) == 5 and row_seed(5, 2) == 7 and row_seed(2**63 - 1, 1) == 0


def test_bad_input_is_a_clear_error(logits: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="seed"):
        Sampler(cfg(), seed=-1)
    with pytest.raises(ValueError, match="2 samplers for 1 rows"):
        sample_batch([Sampler(cfg()), Sampler(cfg())], logits[None])


@pytest.mark.parametrize("scale", [6.0, 0.5])  # peaked: nucleus in the best 1024; flat: full sort
def test_top_p_over_a_large_vocabulary_matches_a_full_sort(scale: float) -> None:
    logits = torch.randn(8000, generator=torch.Generator().manual_seed(1)) * scale
    p = 0.9
    probs, order = torch.sort(logits.softmax(-1), descending=True)
    keep = order[(torch.cumsum(probs, -1) - probs) < p]  # reference nucleus
    kept = torch.isfinite(Sampler(cfg(top_p=p)).process(logits)).nonzero().flatten()
    assert set(kept.tolist()) == set(keep.tolist())
    assert (len(keep) < 1024) == (scale > 1)  # both paths are exercised
