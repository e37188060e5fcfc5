"""One generated sequence: its sampler, detokenizer, stop matcher and outputs, with no knowledge
of the batch it runs in.

    seq = SequenceState(prompt_ids, GenerationConfig(max_new_tokens=20), tokenizer, max_tokens=20)
    piece = seq.append(token, logprob)    # text that is now safe to stream (maybe "")
    seq.finished, seq.finish_reason       # "stop" | "length" | "cancelled" once it has ended
    seq.completion()                      # -> Completion

`nanollm.batch.DecodeBatch` runs many of these as rows of one batch; `InferencePipeline` and the
server both drive sequences through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nanollm.config import GenerationConfig
from nanollm.detokenizer import IncrementalDetokenizer, StopMatcher
from nanollm.sampling import Sampler
from nanollm.tokenizer import Tokenizer

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass
class Completion:
    """One generated sequence.

    `token_ids` holds every sampled token, including an end-of-text or stop-completing last token
    (`text` never contains the end-of-text marker or a stop sequence); `logprobs`, when asked
    for, has one entry per token id, and `top_logprobs` (with GenerationConfig.top_logprobs) one
    list of (token, logprob) alternatives per token id, best first. `seed` reproduces this
    sequence with num_samples=1.
    """

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-text or a stop sequence) | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    seed: int
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    # With score_prompt: one per prompt token after the first (the model's own distribution).
    prompt_logprobs: list[float] | None = None
    prompt_top_logprobs: list[list[tuple[int, float]]] | None = None


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
        score_prompt: bool = False,
    ) -> None:
        """`max_tokens`: tokens this sequence may produce (its max_new_tokens); `seed`
        overrides config.seed (None in both: a random, recorded seed). `score_prompt`: also
        record the model's log-probability of each prompt token after the first (and, with
        config.top_logprobs, the alternatives); then max_tokens may be 0, to score only."""
        if max_tokens < (0 if score_prompt else 1):
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
        # Per token: the most likely alternatives (token, logprob), when top_logprobs asked.
        self.top_logprobs: list[list[tuple[int, float]]] | None = (
            [] if config.logprobs and config.top_logprobs else None)
        # Per prompt token after the first: its log-probability under the model (DecodeBatch
        # fills them while prefilling), and the alternatives when top_logprobs is asked.
        self.prompt_logprobs: list[float] | None = [] if score_prompt else None
        self.prompt_top_logprobs: list[list[tuple[int, float]]] | None = (
            [] if score_prompt and config.top_logprobs else None)
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token: int, logprob: float | None = None,
               top: list[tuple[int, float]] | None = None) -> str:
        """Record a sampled token; returns the text that is now safe to stream (maybe "")."""
        if self.finished:
            raise RuntimeError("append() on a finished sequence")
        self.token_ids.append(token)
        if self.logprobs is not None:
            self.logprobs.append(float("nan") if logprob is None else logprob)
        if self.top_logprobs is not None:
            self.top_logprobs.append(top or [])
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

    def finish_unsampled(self) -> None:
        """End a max_tokens = 0 sequence once its prompt is scored: "length", no text."""
        self.finish_reason = "length"
        self._pieces.append("")

    def cancel(self) -> None:
        """End the sequence early (the caller went away); text held back is dropped."""
        if not self.finished:
            self.finish_reason = "cancelled"

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
            top_logprobs=None if self.top_logprobs is None else list(self.top_logprobs),
            prompt_logprobs=None if self.prompt_logprobs is None else list(self.prompt_logprobs),
            prompt_top_logprobs=None if self.prompt_top_logprobs is None
            else list(self.prompt_top_logprobs),
        )
