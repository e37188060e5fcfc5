"""The cached inference path (forward_cached + KVCache) against full recomputation."""

from __future__ import annotations

import copy

import pytest
import torch

from nanollm.config import ModelConfig
from nanollm.kv_cache import KVCache
from nanollm.model import GPT

ATOL = 1e-5


def make_model(mode: str = "packed", dtype: torch.dtype = torch.float32) -> GPT:
    """mode: 'packed' (the default inference setup), 'plain' (oneDNN on the plain weights) or
    'eval' (not prepared: F.linear everywhere)."""
    torch.manual_seed(0)
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=101,
                         dropout=0.0, tokenizer="byte")
    model = GPT(config).to(dtype)
    if mode == "eval":
        return model.eval()
    return model.prepare_for_inference(pack_weights=mode == "packed")


@pytest.fixture(params=["packed", "plain", "eval"])
def model(request: pytest.FixtureRequest) -> GPT:
    return make_model(request.param)


def full_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Every position's logits from the training forward: (B, T) -> (B, T, V)."""
    with torch.no_grad():
        logits, _ = model(idx, targets=idx)
    return logits


def ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.long)


def test_batch1_prefill_then_decode_matches_full_forward(model: GPT) -> None:
    idx = torch.randint(0, 101, (1, 24))
    ref = full_logits(model, idx)
    cache = model.new_cache(1)
    torch.testing.assert_close(model.forward_cached(idx[:, :8], cache), ref[:, 7],
                               atol=ATOL, rtol=0)
    for t in range(8, 24):
        torch.testing.assert_close(model.forward_cached(idx[:, t:t + 1], cache), ref[:, t],
                                   atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [24]


def test_chunked_prefill_returns_every_position(model: GPT) -> None:
    # The second chunk starts at position 10: a causal mask offset by the cached tokens.
    idx = torch.randint(0, 101, (3, 16))
    ref = full_logits(model, idx)
    cache = model.new_cache(3)
    out1 = model.forward_cached(idx[:, :10], cache, all_logits=True)  # (B, 10, V)
    out2 = model.forward_cached(idx[:, 10:], cache, all_logits=True)  # (B, 6, V)
    torch.testing.assert_close(torch.cat([out1, out2], dim=1), ref, atol=ATOL, rtol=0)


def test_ragged_batch_right_padded_with_num_new_per_row(model: GPT) -> None:
    B, T = 3, 20
    idx = torch.randint(0, 101, (B, T))
    ref = full_logits(model, idx)
    lengths = torch.tensor([4, 11, 7])
    padded = idx[:, :11].clone()
    padded[0, 4:] = 0  # padding tokens must not matter
    padded[2, 7:] = 0
    cache = model.new_cache(B)
    rows = torch.arange(B)
    torch.testing.assert_close(model.forward_cached(padded, cache, lengths),
                               ref[rows, lengths - 1], atol=ATOL, rtol=0)
    for t in range(6):  # decode: rows sit at different positions
        pos = lengths + t
        logits = model.forward_cached(idx[rows, pos][:, None], cache, ones(B))
        torch.testing.assert_close(logits, ref[rows, pos], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == (lengths + 6).tolist()


def test_row_with_num_new_zero_is_unchanged(model: GPT) -> None:
    idx = torch.randint(0, 101, (2, 12))
    ref = full_logits(model, idx)
    cache = model.new_cache(2)
    model.forward_cached(idx[:, :6], cache)
    real = slice(0, cache.max_len)  # padding may write the scratch slot at max_len, by design
    k_before, v_before = cache.k[:, 1, :, real].clone(), cache.v[:, 1, :, real].clone()
    # Row 1 is idle for three steps; its cache and length must not move.
    for t in range(6, 9):
        out = model.forward_cached(idx[:, t:t + 1], cache, torch.tensor([1, 0]))
        torch.testing.assert_close(out[0], ref[0, t], atol=ATOL, rtol=0)
    assert cache.lengths.tolist() == [9, 6]
    assert torch.equal(cache.k[:, 1, :, real], k_before)
    assert torch.equal(cache.v[:, 1, :, real], v_before)
    # ...and it continues exactly where it stopped.
    out = model.forward_cached(idx[:, 6:7], cache, torch.tensor([0, 1]))
    torch.testing.assert_close(out[1], ref[1, 6], atol=ATOL, rtol=0)


def test_reset_one_row_starts_a_new_sequence(model: GPT) -> None:
    idx = torch.randint(0, 101, (2, 10))
    cache = model.new_cache(2)
    model.forward_cached(idx, cache)
    cache.reset([1])
    assert cache.lengths.tolist() == [10, 0]
    new = torch.randint(0, 101, (1, 5))
    padded = torch.zeros(2, 5, dtype=torch.long)
    padded[1] = new[0]
    out = model.forward_cached(padded, cache, torch.tensor([0, 5]))
    torch.testing.assert_close(out[1], full_logits(model, new)[0, -1], atol=ATOL, rtol=0)
    # Row 0 kept its sequence.
    nxt = torch.randint(0, 101, (2, 1))
    out = model.forward_cached(nxt, cache, torch.tensor([1, 0]))
    ref = full_logits(model, torch.cat([idx[:1], nxt[:1]], dim=1))
    torch.testing.assert_close(out[0], ref[0, -1], atol=ATOL, rtol=0)


def test_exceeding_block_size_or_cache_raises() -> None:
    model = make_model()
    cache = model.new_cache(1)  # max_len = block_size = 32
    model.forward_cached(torch.zeros(1, 30, dtype=torch.long), cache)
    with pytest.raises(ValueError, match=r"would reach 33 tokens; the limit is 32"):
        model.forward_cached(torch.zeros(1, 3, dtype=torch.long), cache)
    assert cache.lengths.tolist() == [30]  # a refused step changes nothing
    small = model.new_cache(1, max_len=4)
    with pytest.raises(ValueError, match=r"would reach 5 tokens; the limit is 4"):
        model.forward_cached(torch.zeros(1, 5, dtype=torch.long), small)
    big = KVCache(n_layer=2, batch_size=1, n_head=2, max_len=64, head_dim=16)
    with pytest.raises(ValueError, match=r"the limit is 32"):
        model.forward_cached(torch.zeros(1, 33, dtype=torch.long), big)


def test_bad_num_new_and_batch_size_raise() -> None:
    model = make_model()
    cache = model.new_cache(2)
    with pytest.raises(ValueError, match=r"num_new must be in \[0, 3\]"):
        model.forward_cached(torch.zeros(2, 3, dtype=torch.long), cache, torch.tensor([4, 1]))
    with pytest.raises(ValueError, match=r"num_new must have shape \(2,\)"):
        model.forward_cached(torch.zeros(2, 3, dtype=torch.long), cache, torch.tensor([1]))
    with pytest.raises(ValueError, match="idx has 3 rows but 2 cache rows are stepped"):
        model.forward_cached(torch.zeros(3, 3, dtype=torch.long), cache)


def test_bfloat16_runs() -> None:
    model = make_model(dtype=torch.bfloat16)
    idx = torch.randint(0, 101, (2, 8))
    cache = model.new_cache(2)
    assert cache.k.dtype == torch.bfloat16
    logits = model.forward_cached(idx, cache)
    # Same seed, same weights rounded to bf16: close to the fp32 model.
    ref = full_logits(make_model(), idx)[:, -1]
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)
    for _ in range(3):
        logits = model.forward_cached(logits.argmax(-1, keepdim=True), cache)
    assert logits.shape == (2, 101) and logits.dtype == torch.bfloat16
    assert torch.isfinite(logits).all() and cache.lengths.tolist() == [11, 11]


def test_packed_weights_follow_weight_changes() -> None:
    model = make_model()
    idx = torch.randint(0, 101, (1, 6))
    before = model.forward_cached(idx, model.new_cache(1))
    other = GPT(model.config)
    model.load_weights(other.state_dict())  # in place: the packed copies are now stale
    after = model.forward_cached(idx, model.new_cache(1))
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, full_logits(model, idx)[:, -1], atol=ATOL, rtol=0)


def test_train_frees_packed_weights_and_copies_work() -> None:
    model = make_model()
    clone = copy.deepcopy(model)  # the opaque packed tensors are not copied...
    idx = torch.randint(0, 101, (1, 6))
    torch.testing.assert_close(clone.forward_cached(idx, clone.new_cache(1)),
                               model.forward_cached(idx, model.new_cache(1)), atol=ATOL, rtol=0)
    clone.prepare_for_inference()  # ...and come back on request
    assert clone.inference_packed == model.inference_packed
    model.train()
    assert not model.inference_packed
