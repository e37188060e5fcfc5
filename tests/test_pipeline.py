"""InferencePipeline on tiny real GPTs: cached decoding parity, seeds, streaming, stops, limits."""

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

from nanollm.config import GenerationConfig
from nanollm.detokenizer import IncrementalDetokenizer, StopMatcher
from nanollm.pipeline import InferencePipeline

# Tiny models: one thread avoids stalls when other processes share the two cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def greedy(**kw) -> GenerationConfig:
    return GenerationConfig(**{"temperature": 0.0, "stop_at_eos": False, **kw})


@pytest.fixture(scope="module")
def random_pipe() -> InferencePipeline:
    return InferencePipeline.from_model(random_model(), BYTE)


def scripted_pipe(prompt: str, output: list[int]) -> InferencePipeline:
    return InferencePipeline.from_model(scripted_model(prompt, output), BYTE)


# ----------------------------------------------------------------------------------------------
# KV-cached decoding equals recomputation


def test_cached_greedy_equals_recomputation_batch_1(random_pipe: InferencePipeline) -> None:
    [c] = random_pipe.generate_detailed("To be, or", greedy(max_new_tokens=25))
    want = reference_greedy(random_pipe.model, BYTE.encode("To be, or"), 25)
    assert c.token_ids == want
    assert len(set(want)) > 3  # a non-trivial continuation
    assert (c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("length", 9, 25)


def test_cached_greedy_equals_recomputation_in_a_batch(random_pipe: InferencePipeline) -> None:
    prompts = ["a", "hello there", "xyz12"]  # different lengths: a right-padded prefill
    got = random_pipe.generate_batch(prompts, greedy(max_new_tokens=20, num_samples=2))
    assert len(got) == 6
    for i, prompt in enumerate(prompts):
        want = reference_greedy(random_pipe.model, BYTE.encode(prompt), 20)
        assert got[2 * i].token_ids == want and got[2 * i + 1].token_ids == want
    samples = random_pipe.generate_detailed("hello", greedy(max_new_tokens=20, num_samples=3))
    assert [c.token_ids for c in samples] == [reference_greedy(random_pipe.model,
                                                               BYTE.encode("hello"), 20)] * 3


def test_rows_that_finish_early_do_not_disturb_the_others(random_pipe: InferencePipeline) -> None:
    # max_new_tokens 30 for both rows; row 1 stops at its stop string after a few tokens, and
    # row 0 keeps decoding, in the same batch, to exactly what it produces alone.
    want = reference_greedy(random_pipe.model, BYTE.encode("ab"), 30)
    alone = reference_greedy(random_pipe.model, BYTE.encode("xyz"), 30)
    # The first 2-token string of row 1 that row 0 never produces: row 1 stops on it.
    end = next(i for i in range(2, 30) if BYTE.decode(alone[i - 2:i]) not in BYTE.decode(want))
    stop = BYTE.decode(alone[end - 2:end])
    assert end < 20 and stop not in BYTE.decode(alone[:end - 1])
    a, b = random_pipe.generate_batch(["ab", "xyz"], greedy(max_new_tokens=30,
                                                            stop_sequences=[stop]))
    assert (b.finish_reason, b.token_ids) == ("stop", alone[:end])
    assert (a.finish_reason, a.token_ids) == ("length", want)


def test_context_limit(random_pipe: InferencePipeline) -> None:
    # block_size 48: a 100-token prompt keeps its last 47 tokens.
    prompt = "".join(chr(ord("a") + i % 26) for i in range(100))
    [c] = random_pipe.generate_detailed(prompt, greedy(max_new_tokens=10))
    assert (c.prompt_tokens, c.completion_tokens, c.finish_reason) == (47, 10, "length")
    assert c.token_ids == reference_sliding_greedy(random_pipe.model, BYTE.encode(prompt)[-47:],
                                                   10)


def test_generation_slides_past_the_context_window(random_pipe: InferencePipeline) -> None:
    """150 tokens from a block-48 model, rows of different lengths sliding at different steps,
    each equal to recomputation over the same sliding window."""
    prompts = ["ab", "x" * 30]
    rows = random_pipe.generate_batch(prompts, greedy(max_new_tokens=150))
    for prompt, row in zip(prompts, rows, strict=True):
        assert (row.completion_tokens, row.finish_reason) == (150, "length")
        assert row.token_ids == reference_sliding_greedy(random_pipe.model, BYTE.encode(prompt),
                                                         150)


# ----------------------------------------------------------------------------------------------
# seeds, return types


def test_seed_reproduces_through_generate(random_pipe: InferencePipeline) -> None:
    cfg = GenerationConfig(temperature=1.0, top_k=0, max_new_tokens=20, seed=7, stop_at_eos=False)
    first = random_pipe.generate("The", cfg)
    assert isinstance(first, str)
    assert random_pipe.generate("The", cfg) == first
    assert random_pipe.generate("The", cfg.replace(seed=8)) != first
    # sample i of a batch is reproduced alone with seed + i
    batch = random_pipe.generate_detailed("The", cfg.replace(num_samples=3))
    assert [c.seed for c in batch] == [7, 8, 9]
    alone = random_pipe.generate_detailed("The", cfg.replace(seed=9))[0]
    assert alone.token_ids == batch[2].token_ids


def test_random_seed_is_reported(random_pipe: InferencePipeline) -> None:
    cfg = GenerationConfig(temperature=1.0, max_new_tokens=8, stop_at_eos=False)
    [c] = random_pipe.generate_detailed("The", cfg)
    again = random_pipe.generate_detailed("The", cfg.replace(seed=c.seed))[0]
    assert again.token_ids == c.token_ids


def test_return_types(random_pipe: InferencePipeline) -> None:
    texts = random_pipe.generate("Hi", GenerationConfig(num_samples=3, max_new_tokens=4))
    assert isinstance(texts, list) and len(texts) == 3 and all(isinstance(t, str) for t in texts)
    stream = random_pipe.generate("Hi", GenerationConfig(stream=True, max_new_tokens=4, seed=1))
    assert not isinstance(stream, str | list)
    assert "".join(stream) == random_pipe.generate("Hi", GenerationConfig(max_new_tokens=4,
                                                                          seed=1))
    with pytest.raises(ValueError, match="num_samples"):
        random_pipe.stream("Hi", GenerationConfig(num_samples=2))
    with pytest.raises(ValueError, match="num_samples"):
        random_pipe.generate("Hi", GenerationConfig(num_samples=2, stream=True))


def test_logprobs_per_token(random_pipe: InferencePipeline) -> None:
    """Each logprob is log_softmax of the full forward's logits at that position, for the token
    that was chosen."""
    cfg = GenerationConfig(temperature=0.0, max_new_tokens=6, logprobs=True, stop_at_eos=False)
    [c] = random_pipe.generate_detailed("Hi", cfg)
    assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids) == 6
    ids = torch.tensor([BYTE.encode("Hi") + c.token_ids])
    with torch.no_grad():
        logits, _ = random_pipe.model(ids, ids)  # (1, T, V) with targets: every position
    want = torch.log_softmax(logits[0, 1:-1], dim=-1)  # positions that predicted the outputs
    chosen = want[torch.arange(6), torch.tensor(c.token_ids)]
    torch.testing.assert_close(torch.tensor(c.logprobs), chosen, atol=1e-5, rtol=1e-5)


def test_stream_does_not_leak_inference_mode(random_pipe: InferencePipeline) -> None:
    for _ in random_pipe.stream("Hi", GenerationConfig(max_new_tokens=5, stop_at_eos=False)):
        assert not torch.is_inference_mode_enabled()


def test_no_model_and_bad_prompt_errors(random_pipe: InferencePipeline) -> None:
    with pytest.raises(RuntimeError, match="load_model"):
        InferencePipeline().generate("Hi")
    with pytest.raises(TypeError, match="prompt must be a str"):
        random_pipe.generate(b"Hi")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# streaming text: UTF-8, stop sequences, end-of-text


def test_multibyte_characters_are_never_streamed_broken() -> None:
    text = "a😀b中文é!"
    pipe = scripted_pipe("> ", list(text.encode()))
    pieces = list(pipe.stream("> ", greedy(max_new_tokens=len(text.encode()))))
    assert pieces == list(text)  # one piece per character, 4-byte emoji included
    assert all("\ufffd" not in p for p in pieces)


def test_stop_sequence_split_over_tokens_is_trimmed_and_never_streamed() -> None:
    script = "hello ENx END world"
    pipe = scripted_pipe("Q:", list(script.encode()))
    cfg = greedy(max_new_tokens=30, stop_sequences=["END"])
    pieces = list(pipe.stream("Q:", cfg))
    assert "".join(pieces) == "hello ENx "  # "EN" was held back, then released by "x"
    assert "D" not in "".join(pieces) and all("END" not in p for p in pieces)
    [c] = pipe.generate_detailed("Q:", cfg)
    assert (c.text, c.finish_reason, c.completion_tokens) == ("hello ENx ", "stop", 13)


def test_end_of_text_finishes_with_stop() -> None:
    pipe = scripted_pipe("", [*b"bye", EOT])  # empty prompt: starts from end-of-text
    [c] = pipe.generate_detailed("", greedy(max_new_tokens=10, stop_at_eos=True))
    assert (c.text, c.finish_reason, c.token_ids, c.prompt_tokens) == (
        "bye", "stop", [98, 121, 101, EOT], 1)
    [c] = pipe.generate_detailed("", greedy(max_new_tokens=6, stop_at_eos=False))
    assert (c.text, c.finish_reason, c.completion_tokens) == ("bye", "length", 6)


def test_incomplete_character_at_the_end_is_replaced() -> None:
    pipe = scripted_pipe("x", list("😀".encode()))
    [c] = pipe.generate_detailed("x", greedy(max_new_tokens=2))
    assert (c.text, c.finish_reason) == ("\ufffd", "length")


def test_detokenizer_and_stop_matcher_directly() -> None:
    detok = IncrementalDetokenizer(BYTE)
    assert [detok.push(b) for b in "é".encode()] == ["", "é"]
    stop = StopMatcher(["\n\n", "###"])
    assert stop.push("ab\n") == ("ab", False)
    assert stop.push("c#") == ("\nc", False)
    assert stop.push("#") == ("", False)
    assert stop.flush() == "##"
    assert StopMatcher(["###"]).push("x###y") == ("x", True)
    with pytest.raises(ValueError, match="non-empty"):
        StopMatcher([""])
