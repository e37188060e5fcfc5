"""DecodeBatch: sequences joining and leaving a running batch between steps, on tiny real GPTs.

Every check compares against decoding the same sequence alone by full recomputation.
"""

from __future__ import annotations

import pytest
import torch
from decoding_refs import (
    BYTE,
    EOT,
    random_model,
    reference_greedy,
    reference_sliding_greedy,
    scripted_model,
)

from nanollm.batch import BatchFullError, DecodeBatch, StepOutput
from nanollm.config import GenerationConfig, ModelConfig
from nanollm.model import GPT
from nanollm.sequence import SequenceState
from nanollm.tokenizer import Tokenizer, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> GPT:
    return random_model()


def seq(prompt: str | list[int], max_tokens: int = 20, tokenizer: Tokenizer = BYTE,
        **kw: object) -> SequenceState:
    cfg = GenerationConfig(**{"temperature": 0.0, "stop_at_eos": False,
                              "max_new_tokens": max_tokens, **kw})
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
    return SequenceState(ids, cfg, tokenizer, max_tokens=max_tokens)


def run(batch: DecodeBatch, steps: int | None = None) -> list[list[StepOutput]]:
    """Step until the batch is empty (or `steps` times); every step's outputs."""
    history = []
    while batch.num_active and (steps is None or len(history) < steps):
        history.append(batch.step())
    return history


def test_request_admitted_mid_generation_gets_the_tokens_it_gets_alone(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=4)
    first = [seq("To be, or", 30), seq("x", 30)]
    for s in first:
        batch.admit(s)
    run(batch, steps=7)  # both rows are mid-generation
    late = seq("hello there", 12)
    assert batch.admit(late) == 2
    assert batch.cached_tokens == (9 + 6) + (1 + 6)  # prompts, then 6 fed tokens each
    run(batch)
    assert batch.cached_tokens == 0  # finished rows hold nothing (the KV usage gauge)
    assert late.token_ids == reference_greedy(model, BYTE.encode("hello there"), 12)
    for s, prompt in zip(first, ["To be, or", "x"], strict=True):
        assert s.token_ids == reference_greedy(model, BYTE.encode(prompt), 30)
        assert s.finish_reason == "length"


def test_rows_finish_at_different_steps_beside_rows_that_go_on(model: GPT) -> None:
    alone = reference_greedy(model, BYTE.encode("abc"), 40)
    long_ref = reference_greedy(model, BYTE.encode("To be"), 40)
    # This seeded model continues "abc" with "<<<<<" then bytes that are not ASCII; the long
    # row never writes "<<<<<", so only the stop row stops on it, at its 5th token.
    stop, end = "<<<<<", 5
    assert alone[:end] == [ord("<")] * end and stop not in BYTE.decode(long_ref)
    long_row, short_row, stop_row = seq("To be", 40), seq("abc", 3), seq("abc", 40,
                                                                         stop_sequences=[stop])
    batch = DecodeBatch(model, BYTE, max_batch_size=3)
    for s in (long_row, short_row, stop_row):
        batch.admit(s)
    history = run(batch)
    finished_at = {o.slot: i for i, outs in enumerate(history) for o in outs if o.finish_reason}
    assert finished_at == {1: 2, 2: end - 1, 0: 39}
    assert (short_row.finish_reason, short_row.token_ids) == ("length", alone[:3])
    assert (stop_row.finish_reason, stop_row.token_ids) == ("stop", alone[:end])
    assert stop not in stop_row.completion().text
    assert (long_row.finish_reason, long_row.token_ids) == ("length", long_ref)


def test_end_of_text_finishes_rows_at_different_steps() -> None:
    # The scripted model emits end-of-text at position 10: a row with a 2-token prompt reaches it
    # after 9 tokens, one with 7 tokens after 4; a 12-token prompt is past it and goes on.
    model = scripted_model("ab", [ord(c) for c in "cdefghij"] + [EOT])
    rows = [seq("ab", 30, stop_at_eos=True), seq("abcdefg", 30, stop_at_eos=True),
            seq("abcdefghijkl", 6, stop_at_eos=True)]
    batch = DecodeBatch(model, BYTE, max_batch_size=3)
    for s in rows:
        batch.admit(s)
    history = run(batch)
    finished_at = {o.slot: (i, o.finish_reason) for i, outs in enumerate(history)
                   for o in outs if o.finish_reason}
    assert finished_at == {1: (3, "stop"), 2: (5, "length"), 0: (8, "stop")}
    assert rows[0].completion().text == "cdefghij"
    assert rows[1].completion().text == "hij"
    assert rows[2].token_ids == [ord("l")] * 6  # past the script the model repeats its input


def test_cancel_frees_the_slot_at_the_next_step(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=2)
    a, b = seq("abc", 30), seq("To be", 30)
    batch.admit(a)
    batch.admit(b)
    run(batch, steps=4)
    with pytest.raises(BatchFullError):
        batch.admit(seq("q"))
    batch.cancel(0)
    outs = batch.step()
    assert [(o.slot, o.token, o.finish_reason) for o in outs if o.slot == 0] == [
        (0, None, "cancelled")]
    assert len(a.token_ids) == 4 and batch.free_slots == 1 and batch.sequence(0) is None
    c = seq("new", 10)
    assert batch.admit(c) == 0
    run(batch)
    assert c.token_ids == reference_greedy(model, BYTE.encode("new"), 10)
    assert b.token_ids == reference_greedy(model, BYTE.encode("To be"), 30)
    assert a.completion().finish_reason == "cancelled"


def test_a_reused_slot_never_sees_its_previous_occupant_even_a_nan(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=2)
    batch.admit(seq("a previous occupant", 25))
    batch.admit(seq("the longer neighbour row", 25))
    run(batch, steps=10)
    used = int(batch.cache.lengths[0])
    batch.cache.k[:, 0, :, :used] = float("nan")  # whatever slot 0 wrote, make it poison
    batch.cache.v[:, 0, :, :used] = float("nan")
    batch.cancel(0)
    batch.step()
    short = seq("hi", 8)
    assert batch.admit(short) == 0  # shorter than its neighbour: attention reads past its end
    run(batch)
    assert short.token_ids == reference_greedy(model, BYTE.encode("hi"), 8)


def test_padded_vocabulary_ids_are_never_generated() -> None:
    gpt2 = load_tokenizer("gpt2")
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50304,
                            tokenizer="gpt2"))
    with torch.no_grad():
        # ln_f adds a bias v to every final hidden state; padding rows of the (tied) head are
        # 50 v, so their logits are about 50: they would win every argmax.
        v = torch.nn.functional.normalize(torch.randn(32), dim=0)
        model.transformer.ln_f.bias.copy_(v)
        model.transformer.wte.weight[50257:] = 50 * v
    model.prepare_for_inference()
    rows = [seq("Hello world", 8, tokenizer=gpt2), seq("A", 8, tokenizer=gpt2, temperature=1.0,
                                                         top_k=0, seed=3)]
    batch = DecodeBatch(model, gpt2, max_batch_size=2)
    for s in rows:
        batch.admit(s)
    run(batch)
    with torch.no_grad():
        logits, _ = model(torch.tensor([gpt2.encode("Hello world")]))
    assert int(logits[0, -1].argmax()) >= 50257  # the unfiltered argmax is a padding id
    for s in rows:
        assert len(s.token_ids) == 8 and max(s.token_ids) < 50257


def test_chunked_prefill_equals_one_prefill_and_decoding_rows_keep_emitting(model: GPT) -> None:
    prompt = "a long prompt that enters in chunks"  # 35 tokens, budget 8: 5 steps to prefill
    whole = seq(prompt, 10, logprobs=True)
    one = DecodeBatch(model, BYTE, max_batch_size=1, prefill_budget=None)
    one.admit(whole)
    run(one)

    batch = DecodeBatch(model, BYTE, max_batch_size=2, prefill_budget=8)
    decoding = seq("x", 40)
    batch.admit(decoding)
    run(batch, steps=3)
    chunked = seq(prompt, 10, logprobs=True)
    batch.admit(chunked)
    history = run(batch)
    first_token_step = next(i for i, outs in enumerate(history) if any(o.slot == 1 for o in outs))
    assert first_token_step == 4  # ceil(35 / 8) = 5 steps of prefill
    for outs in history[:first_token_step + 1]:
        assert 0 in [o.slot for o in outs if o.token is not None]  # row 0 emits every step
    assert chunked.token_ids == whole.token_ids == reference_greedy(model, BYTE.encode(prompt),
                                                                     10)
    torch.testing.assert_close(torch.tensor(chunked.logprobs), torch.tensor(whole.logprobs),
                               atol=1e-5, rtol=1e-5)
    assert decoding.token_ids == reference_greedy(model, BYTE.encode("x"), 40)


def test_logprobs_are_log_softmax_of_a_full_forward(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=2)
    rows = [seq("Hi", 6, logprobs=True), seq("other row", 6, logprobs=True)]
    for s in rows:
        batch.admit(s)
    run(batch)
    for s in rows:
        ids = torch.tensor([s.prompt_ids + s.token_ids])
        with torch.no_grad():
            logits, _ = model(ids, ids)  # (1, T, V): every position
        n = len(s.prompt_ids)
        log_probs = torch.log_softmax(logits[0, n - 1:-1], dim=-1)  # (6, V)
        want = log_probs[torch.arange(6), torch.tensor(s.token_ids)]
        torch.testing.assert_close(torch.tensor(s.logprobs), want, atol=1e-5, rtol=1e-5)


def test_a_step_computes_only_the_active_slots(model: GPT) -> None:
    rows_seen: list[int] = []
    hook = model.transformer.h[0].ln_1.register_forward_hook(
        lambda _m, args, _out: rows_seen.append(args[0].shape[0]))
    try:
        batch = DecodeBatch(model, BYTE, max_batch_size=16)
        a, b = seq("ab", 5), seq("cd", 5)
        batch.admit(a)
        batch.admit(b)
        run(batch)
    finally:
        hook.remove()
    assert rows_seen == [2] * 5  # 16 slots, 2 active: every call carried 2 rows
    assert a.token_ids == reference_greedy(model, BYTE.encode("ab"), 5)


def test_non_contiguous_slots_step_correctly(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=4)
    rows = [seq(p, 15) for p in ("first", "second row", "third", "fourth one")]
    for s in rows:
        batch.admit(s)
    run(batch, steps=3)
    batch.cancel(1)  # active slots become 0, 2, 3: gathered, not a view
    run(batch)
    for s, p in zip(rows, ("first", "second row", "third", "fourth one"), strict=True):
        if s is not rows[1]:
            assert s.token_ids == reference_greedy(model, BYTE.encode(p), 15)


def test_the_context_window_slides_per_row(model: GPT) -> None:
    # block_size 48: the long row slides twice, the short one never, in the same batch.
    long_row, short_row = seq("x" * 30, 60), seq("ab", 10)
    batch = DecodeBatch(model, BYTE, max_batch_size=2)
    batch.admit(long_row)
    run(batch, steps=5)
    batch.admit(short_row)
    run(batch)
    assert long_row.token_ids == reference_sliding_greedy(model, BYTE.encode("x" * 30), 60)
    assert short_row.token_ids == reference_greedy(model, BYTE.encode("ab"), 10)


def test_per_row_seeds_and_settings_do_not_depend_on_batch_mates(model: GPT) -> None:
    def sampled() -> SequenceState:
        return seq("seeded", 15, temperature=0.9, top_p=0.9, top_k=40, seed=11,
                   frequency_penalty=0.5)

    alone = sampled()
    one = DecodeBatch(model, BYTE, max_batch_size=1)
    one.admit(alone)
    run(one)
    batch = DecodeBatch(model, BYTE, max_batch_size=3)
    batch.admit(seq("greedy mate", 20))
    run(batch, steps=2)
    shared = sampled()
    batch.admit(shared)
    batch.admit(seq("another", 20, temperature=1.2, seed=5))
    run(batch)
    assert shared.token_ids == alone.token_ids


def test_admit_rejects_what_cannot_run(model: GPT) -> None:
    batch = DecodeBatch(model, BYTE, max_batch_size=1, max_len=16)
    with pytest.raises(ValueError, match="prompt of 17 tokens does not fit: it must hold 1 to 16"):
        batch.admit(seq("x" * 17))
    done = seq("a", 1)
    done.cancel()
    with pytest.raises(ValueError, match="cannot admit a finished sequence"):
        batch.admit(done)
    with pytest.raises(ValueError, match="slot 0 is empty"):
        batch.cancel(0)
    with pytest.raises(ValueError, match="max_len must be in"):
        DecodeBatch(model, BYTE, max_len=49)


@pytest.mark.parametrize("budget", [None, 4])
def test_prompt_scoring_equals_log_softmax_of_a_full_forward(model: GPT,
                                                              budget: int | None) -> None:
    """score_prompt: each prompt token after the first gets log_softmax of the full forward at
    the position before it (also when the prompt enters in chunks of 4, beside a decoding
    row); max_tokens = 0 scores without sampling and frees the slot."""
    prompt = BYTE.encode("To be, or not to be")  # 19 tokens: chunks of 4 leave a carry
    batch = DecodeBatch(model, BYTE, max_batch_size=3, prefill_budget=budget)
    other = seq("abc", 30)
    batch.admit(other)
    run(batch, steps=2)
    cfg = GenerationConfig(temperature=0.0, stop_at_eos=False, logprobs=True, top_logprobs=2)
    scored = SequenceState(prompt, cfg, BYTE, max_tokens=0, score_prompt=True)
    scored_and_sampled = SequenceState(prompt, cfg, BYTE, max_tokens=3, score_prompt=True)
    batch.admit(scored)
    batch.admit(scored_and_sampled)
    ends = [o for step in run(batch) for o in step if o.sequence is scored]
    assert [(o.token, o.finish_reason) for o in ends] == [(None, "length")]

    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt]), targets=torch.tensor([prompt]))  # (1, T, V)
    want = torch.log_softmax(logits[0, :-1, : BYTE.vocab_size].float(), dim=-1)  # (T-1, V)
    expected = want.gather(1, torch.tensor(prompt[1:])[:, None])[:, 0].tolist()
    for s in (scored, scored_and_sampled):
        assert s.prompt_logprobs == pytest.approx(expected, abs=1e-4)
        best = torch.topk(want, 2)
        assert [[t for t, _ in top] for top in s.prompt_top_logprobs] == best.indices.tolist()
    assert scored.completion().token_ids == [] and scored.completion().text == ""
    assert scored_and_sampled.token_ids == reference_greedy(model, prompt, 3)
    assert other.token_ids == reference_greedy(model, BYTE.encode("abc"), 30)
