"""In-process text generation: prompt in, text (or a stream of text pieces) out.

    pipe = InferencePipeline(device="auto")
    pipe.load_model(checkpoint_path="out/ckpt")            # or model_type="gpt2"
    pipe.generate("ROMEO:", GenerationConfig(max_new_tokens=50, seed=1))       # -> str
    for piece in pipe.stream("ROMEO:", GenerationConfig(max_new_tokens=50)):  # -> Iterator[str]
        print(piece, end="", flush=True)
    pipe.generate_detailed("ROMEO:", GenerationConfig(num_samples=3, logprobs=True))
                                                           # -> list[Completion]

How a request runs: the prompt is encoded once and copied into `num_samples` rows, which run
as one `DecodeBatch` (nanollm/batch.py, the project's one decode loop): one prefill of all rows,
then one sampled token per live row per step. A row that has finished leaves the batch.

Context limit: a prompt of block_size tokens or more keeps its LAST block_size - 1 tokens (a
warning is logged). Generation may run past block_size: when a row's window is full, the window
slides: that row's cache is reset and its last block_size // 2 tokens are recomputed in one
prefill, then decoding goes on. The model never sees more than block_size tokens, but right
after a slide it sees only block_size // 2 of them, so from the first slide on the output can
differ from nanoGPT's crop (which recomputes the last block_size tokens for every new token).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from nanollm.batch import DecodeBatch
from nanollm.config import GenerationConfig
from nanollm.model import GPT
from nanollm.sampling import random_seed, row_seed
from nanollm.sequence import Completion, SequenceState
from nanollm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from nanollm.loader import LoadedModel

log = logging.getLogger(__name__)

__all__ = ["Completion", "InferencePipeline", "SequenceState", "TextStream"]


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

        The rows run as one DecodeBatch, row i in slot i. Torch work happens inside step(),
        never across a yield, so the caller's code between pieces does not run in inference
        mode.
        """
        model, tokenizer = self._loaded()
        # Room for every token that will be fed (the prompt plus all but the last sampled token),
        # up to the context window; a row that fills the window slides.
        needed = max(len(row.prompt_ids) + row.max_tokens - 1 for row in rows)
        batch = DecodeBatch(model, tokenizer, max_batch_size=len(rows), prefill_budget=None,
                            max_len=max(2, min(needed, model.config.block_size)))
        for row in rows:
            batch.admit(row)
        while batch.num_active:
            for out in batch.step():
                if out.text:
                    yield out.slot, out.text
