"""InferencePipeline on tiny real GPTs: cached decoding parity, seeds, streaming, stops, limits."""

from __future__ import annotations

import pytest
import torch

from nanollm.config import GenerationConfig, ModelConfig
from nanollm.detokenizer import IncrementalDetokenizer, StopMatcher
from nanollm.model import GPT
from nanollm.pipeline import InferencePipeline
from nanollm.tokenizer import load_tokenizer

BYTE = load_tokenizer("byte")
EOT = 256


# Tiny models: one thread avoids stalls when other processes share the two cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def greedy(**kw) -> GenerationConfig:
    return GenerationConfig(**{"temperature": 0.0, "stop_at_eos": False, **kw})


@pytest.fixture(scope="module")
def random_pipe() -> InferencePipeline:
    """A tiny byte-level GPT with large random weights, so its greedy choices are not ties and
    do not merely repeat the input token."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=257,
                            tokenizer="byte"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5 if "wte" in name or "wpe" in name else 0.3)
    return InferencePipeline.from_model(model, BYTE)


def scripted_pipe(prompt: str, output: list[int]) -> InferencePipeline:
    """A real GPT whose weights force it to continue `prompt` with `output` (byte tokens).

    Every block's output projections are zero, so the residual stream is wte[token] + wpe[pos];
    wte is the identity (tied, so logits = LayerNorm(x) @ wte^T = LayerNorm(x)) and wpe[pos]
    holds 10 * one-hot(next token), which dominates: argmax at position pos is the token that
    should follow it. Past the script the model repeats its input token.
    """
    full = (BYTE.encode(prompt) or [EOT]) + output
    n_embd = 264  # >= vocab_size, so every token gets its own dimension
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=len(full) + 8,
                            vocab_size=257, tokenizer="byte"))
    with torch.no_grad():
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.transformer.wte.weight.copy_(torch.eye(257, n_embd))
        model.transformer.wpe.weight.zero_()
        for pos, nxt in enumerate(full[1:]):
            model.transformer.wpe.weight[pos, nxt] = 10.0
    return InferencePipeline.from_model(model, BYTE)


@torch.no_grad()
def reference_greedy(model: GPT, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding by full recomputation over the growing sequence (no cache)."""
    idx = torch.tensor([ids])
    out = []
    for _ in range(steps):
        logits, _ = model(idx)  # (1, 1, V) at the last position
        token = int(logits[0, -1].argmax())
        out.append(token)
        idx = torch.cat([idx, torch.tensor([[token]])], dim=1)
    return out


def reference_sliding_greedy(model: GPT, ids: list[int], steps: int) -> list[int]:
    """Greedy by full recomputation over a window that, once full, restarts from the last
    block_size // 2 tokens: the pipeline's sliding context, spelled out."""
    block, keep = model.config.block_size, model.config.block_size // 2
    seq, window, out = list(ids), list(ids), []
    for _ in range(steps):
        logits, _ = model(torch.tensor([window]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        seq.append(token)
        window = seq[-keep:] if len(window) == block else [*window, token]
    return out


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
    # Row 1 stops after 3 tokens; row 0 keeps decoding after it stops.
    a, b = random_pipe.generate_batch(["ab", "x" * 45], greedy(max_new_tokens=15))
    assert a.token_ids == reference_greedy(random_pipe.model, BYTE.encode("ab"), 15)
    c = random_pipe.generate_batch(["ab", "xyz"], greedy(max_new_tokens=3))[1]
    assert c.token_ids == reference_greedy(random_pipe.model, BYTE.encode("xyz"), 3)
    assert (c.finish_reason, c.completion_tokens) == ("length", 3)
    assert b.completion_tokens == 15


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
    [c] = random_pipe.generate_detailed("Hi", GenerationConfig(max_new_tokens=6, logprobs=True,
                                                               stop_at_eos=False))
    assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids) == 6
    assert all(lp <= 0.0 for lp in c.logprobs)


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
