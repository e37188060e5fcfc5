"""In-process text generation: prompt in, text (or a stream of text pieces) out.

    pipe = InferencePipeline(device="auto")
    pipe.load_model(checkpoint_path="out/ckpt")            # or model_type="gpt2"
    pipe.generate("ROMEO:", GenerationConfig(max_new_tokens=50, seed=1))       # -> str
    for piece in pipe.stream("ROMEO:", GenerationConfig(max_new_tokens=50)):  # -> Iterator[str]
        print(piece, end="", flush=True)
    pipe.generate_detailed("ROMEO:", GenerationConfig(num_samples=3, logprobs=True))
                                                           # -> list[Completion]

How a request runs: the prompt is encoded once and copied into `num_samples` rows; ONE prefill
runs all rows through the model as a batch and fills the KV cache; then each step samples one
token per live row and feeds the new tokens back as one (B, 1) batch. A row that has finished
is fed nothing (num_new = 0) and its logits are ignored.

Context limit: a prompt of block_size tokens or more keeps its LAST block_size - 1 tokens (a
warning is logged). Generation may run past block_size: when a row's window is full, the window
slides (as nanoGPT's crop to the last block_size tokens does): the row's cache is reset and its
last block_size // 2 tokens are recomputed in one prefill, then decoding goes on. Sliding every
half window costs one extra prefill per block_size // 2 tokens instead of nanoGPT's full
recomputation per token.

The per-sequence piece, `SequenceState` (sampler + detokenizer + stop matcher + outputs), has no
knowledge of the batch, so a continuous-batching server can drive it from its own loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nanollm.config import GenerationConfig
from nanollm.detokenizer import IncrementalDetokenizer, StopMatcher
from nanollm.kv_cache import KVCache
from nanollm.model import GPT
from nanollm.sampling import Sampler, random_seed, row_seed, sample_batch
from nanollm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from nanollm.loader import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class Completion:
    """One generated sequence.

    `token_ids` holds every sampled token, including an end-of-text or stop-completing last token
    (`text` never contains the end-of-text marker or a stop sequence); `logprobs`, when asked
    for, has one entry per token id. `seed` reproduces this sequence with num_samples=1.
    """

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-text or a stop sequence) | "length"
    prompt_tokens: int
    completion_tokens: int
    seed: int
    logprobs: list[float] | None = None


class SequenceState:
    """Decoding state of one sequence: feed it sampled tokens, get text pieces to stream."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        tokenizer: Tokenizer,
        *,
        max_tokens: int,
        seed: int | None = None,
    ) -> None:
        """`max_tokens`: tokens this sequence may produce (its max_new_tokens); `seed`
        overrides config.seed (None in both: a random, recorded seed)."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.prompt_ids = list(prompt_ids)
        self.config = config
        self.max_tokens = max_tokens
        self.sampler = Sampler(config, self.prompt_ids, seed=seed)
        self.eot_token = tokenizer.eot_token if config.stop_at_eos else None
        self._detok = IncrementalDetokenizer(tokenizer)
        self._stop = StopMatcher(config.stop_sequences)
        self._pieces: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list[float] | None = [] if config.logprobs else None
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token: int, logprob: float | None = None) -> str:
        """Record a sampled token; returns the text that is now safe to stream (maybe "")."""
        if self.finished:
            raise RuntimeError("append() on a finished sequence")
        self.token_ids.append(token)
        if self.logprobs is not None:
            self.logprobs.append(float("nan") if logprob is None else logprob)
        if token == self.eot_token:
            return self._finish("stop", "")
        text, matched = self._stop.push(self._detok.push(token))
        if matched:
            self.finish_reason = "stop"
            self._pieces.append(text)
            return text
        if len(self.token_ids) >= self.max_tokens:
            return self._finish("length", text)
        self._pieces.append(text)
        return text

    def _finish(self, reason: str, text: str) -> str:
        """Flush a partial character and held-back text; a stop sequence may still match."""
        tail, matched = self._stop.push(self._detok.flush())
        text += tail if matched else tail + self._stop.flush()
        self.finish_reason = "stop" if matched else reason
        self._pieces.append(text)
        return text

    def completion(self) -> Completion:
        if self.finish_reason is None:
            raise RuntimeError("the sequence has not finished yet")
        return Completion(
            text="".join(self._pieces),
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.token_ids),
            seed=self.sampler.seed,
            logprobs=None if self.logprobs is None else list(self.logprobs),
        )


class TextStream(Iterator[str]):
    """Text pieces of one sequence as they are generated; `.completion` once exhausted."""

    def __init__(self, events: Iterator[tuple[int, str]], state: SequenceState) -> None:
        self._events = events
        self._state = state

    def __next__(self) -> str:
        _, piece = next(self._events)
        return piece

    @property
    def completion(self) -> Completion | None:
        """The finished sequence (finish reason, tokens, seed), or None while still running."""
        return self._state.completion() if self._state.finished else None

    def close(self) -> None:
        """Stop generating early (e.g. the reader went away)."""
        self._events.close()


class InferencePipeline:
    """A loaded model plus its tokenizer, and the generation loop around them."""

    def __init__(self, device: str = "auto", dtype: str = "auto") -> None:
        self.device = device
        self.dtype = dtype
        self.model: GPT | None = None
        self.tokenizer: Tokenizer | None = None
        self.source: str | None = None

    # ------------------------------------------------------------------------------------------
    # loading

    def load_model(
        self,
        checkpoint_path: str | None = None,
        model_type: str | None = None,
        compile: bool = False,
    ) -> LoadedModel:
        """Load through ModelLoader (a checkpoint folder, HF folder, nanoGPT ckpt.pt or preset;
        neither: the shipped demo model) onto this pipeline's device and dtype."""
        from nanollm.loader import ModelLoader  # local: keeps `import nanollm.pipeline` light

        loaded = ModelLoader.load(checkpoint_path=checkpoint_path, model_type=model_type,
                                  device=self.device, dtype=self.dtype, compile=compile)
        self._use(loaded.model, loaded.tokenizer, loaded.source)
        return loaded

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> InferencePipeline:
        """Wrap what ModelLoader.load returned (already prepared for inference)."""
        pipe = cls()
        pipe._use(loaded.model, loaded.tokenizer, loaded.source)
        return pipe

    @classmethod
    def from_model(cls, model: GPT, tokenizer: Tokenizer, source: str = "memory"
                   ) -> InferencePipeline:
        """Wrap a GPT built in memory (tests, notebooks); calls prepare_for_inference()."""
        pipe = cls()
        pipe._use(model.prepare_for_inference(), tokenizer, source)
        return pipe

    def _use(self, model: GPT, tokenizer: Tokenizer, source: str) -> None:
        if model.config.block_size < 2:
            raise ValueError(f"block_size {model.config.block_size} leaves no room to generate; "
                             "it must be >= 2")
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.device = str(next(model.parameters()).device)

    def _loaded(self) -> tuple[GPT, Tokenizer]:
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("no model loaded; call load_model() first")
        return self.model, self.tokenizer

    # ------------------------------------------------------------------------------------------
    # public generation API

    def generate(self, prompt: str, config: GenerationConfig | None = None
                 ) -> str | list[str] | TextStream:
        """Text for one sample; a list when config.num_samples > 1; with config.stream, the
        iterator of `stream()`."""
        config = config or GenerationConfig()
        if config.stream:
            return self.stream(prompt, config)
        texts = [c.text for c in self.generate_detailed(prompt, config)]
        return texts if config.num_samples > 1 else texts[0]

    def stream(self, prompt: str, config: GenerationConfig | None = None) -> TextStream:
        """Text pieces as they are generated. Pieces are whole characters and never contain
        (part of) a stop sequence."""
        config = config or GenerationConfig()
        if config.num_samples != 1:
            raise ValueError(f"stream() generates one sequence, but num_samples is "
                             f"{config.num_samples}; use generate_detailed() for several")
        rows = self._new_rows([prompt], config)
        return TextStream(self._run(rows), rows[0])

    def generate_detailed(self, prompt: str, config: GenerationConfig | None = None
                          ) -> list[Completion]:
        """num_samples completions of one prompt, with tokens, finish reasons and seeds."""
        return self.generate_batch([prompt], config)

    def generate_batch(self, prompts: Sequence[str], config: GenerationConfig | None = None
                       ) -> list[Completion]:
        """Several prompts (any lengths) in one batch: num_samples completions per prompt,
        prompt-major. Sample i of every prompt uses seed + i."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("generate_batch() expects a non-empty list of prompts")
        rows = self._new_rows(prompts, config or GenerationConfig())
        for _ in self._run(rows):
            pass
        return [row.completion() for row in rows]

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt token ids: an empty prompt starts from end-of-text (as nanoGPT does); a prompt
        that does not leave room for one new token keeps its last block_size - 1 tokens."""
        model, tokenizer = self._loaded()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        ids = tokenizer.encode(prompt)
        if not ids:
            if tokenizer.eot_token is None:
                raise ValueError(f"empty prompt, and the {tokenizer.name!r} tokenizer has no "
                                 "end-of-text token to start from; give a prompt")
            ids = [tokenizer.eot_token]
        limit = model.config.block_size - 1
        if len(ids) > limit:
            log.warning("prompt of %d tokens exceeds the context (%d); keeping the last %d",
                        len(ids), model.config.block_size, limit)
            ids = ids[-limit:]
        return ids

    # ------------------------------------------------------------------------------------------
    # the decode loop

    def _new_rows(self, prompts: Sequence[str], config: GenerationConfig) -> list[SequenceState]:
        _, tokenizer = self._loaded()
        base_seed = config.seed if config.seed is not None else random_seed()
        rows = []
        for prompt in prompts:
            ids = self.encode_prompt(prompt)
            for i in range(config.num_samples):
                rows.append(SequenceState(ids, config, tokenizer, seed=row_seed(base_seed, i),
                                          max_tokens=config.max_new_tokens))
        return rows

    def _run(self, rows: list[SequenceState]) -> Iterator[tuple[int, str]]:
        """Generate until every row finishes; yields (row index, text piece) for non-empty pieces.

        Torch work happens in short inference-mode calls, never across a yield, so the caller's
        code between pieces does not run in inference mode.
        """
        cache, logits = self._prefill(rows)
        while True:
            for i, piece in self._sample(rows, logits):
                if piece:
                    yield i, piece
            if all(row.finished for row in rows):
                return
            logits = self._decode(rows, cache)

    @torch.inference_mode()
    def _prefill(self, rows: list[SequenceState]) -> tuple[KVCache, torch.Tensor]:
        """All prompts as ONE right-padded (B, T) batch -> cache and (B, V) next-token logits."""
        model, _ = self._loaded()
        device = next(model.parameters()).device
        lengths = [len(row.prompt_ids) for row in rows]
        idx = torch.zeros(len(rows), max(lengths), dtype=torch.long)  # (B, T), 0-padded
        for b, row in enumerate(rows):
            idx[b, : lengths[b]] = torch.tensor(row.prompt_ids)
        # Room for every token that will be fed (the prompt plus all but the last sampled token),
        # up to the context window; a row that fills the window slides (see _decode).
        needed = max(n + row.max_tokens - 1 for n, row in zip(lengths, rows, strict=True))
        cache = model.new_cache(len(rows), min(needed, model.config.block_size))
        num_new = torch.tensor(lengths, device=device)
        return cache, model.forward_cached(idx.to(device), cache, num_new)

    @torch.inference_mode()
    def _sample(self, rows: list[SequenceState], logits: torch.Tensor) -> list[tuple[int, str]]:
        """Sample one token for each live row of (B, V) logits and append it to that row."""
        _, tokenizer = self._loaded()
        live = [i for i, row in enumerate(rows) if not row.finished]
        if len(live) < len(rows):
            logits = logits[live]
        # A model may pad its vocabulary (50304 for 50257): padding ids are never sampled.
        logits = logits[:, : tokenizer.vocab_size]
        samples = sample_batch([rows[i].sampler for i in live], logits)
        return [(i, rows[i].append(s.token, s.logprob)) for i, s in zip(live, samples, strict=True)]

    @torch.inference_mode()
    def _decode(self, rows: list[SequenceState], cache: KVCache) -> torch.Tensor:
        """Feed each live row its last token: (B, 1) -> (B, V); finished rows feed nothing.

        A row whose window is full slides instead: its cache row is reset and it is fed its last
        block_size // 2 tokens in the same call (rows may feed different numbers of tokens)."""
        model, _ = self._loaded()
        device = next(model.parameters()).device
        lengths = cache.lengths.tolist()
        keep = max(1, model.config.block_size // 2)
        feeds: list[list[int]] = []
        full: list[int] = []
        for b, row in enumerate(rows):
            if row.finished:
                feeds.append([])
            elif lengths[b] >= cache.max_len:
                full.append(b)
                feeds.append((row.prompt_ids + row.token_ids)[-keep:])
            else:
                feeds.append(row.token_ids[-1:])
        if not full:  # the common step: one token per live row, (B, 1)
            last = torch.tensor([f or [0] for f in feeds], device=device)
            num_new = torch.tensor([len(f) for f in feeds], device=device)
            return model.forward_cached(last, cache, num_new)
        cache.reset(full)
        idx = torch.zeros(len(rows), max(len(f) for f in feeds), dtype=torch.long)  # (B, S)
        for b, f in enumerate(feeds):
            idx[b, : len(f)] = torch.tensor(f, dtype=torch.long)
        num_new = torch.tensor([len(f) for f in feeds], device=device)
        return model.forward_cached(idx.to(device), cache, num_new)
