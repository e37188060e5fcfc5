"""The step-level batch: sequences join and leave a running batch between decode steps.

    batch = DecodeBatch(model, tokenizer, max_batch_size=16, prefill_budget=512)
    slot = batch.admit(SequenceState(prompt_ids, config, tokenizer, max_tokens=64))
    while batch.num_active:
        for out in batch.step():          # one StepOutput per row that produced something
            send(out.slot, out.text)      # out.token, out.logprob, out.finish_reason
    batch.cancel(slot)                    # between steps; reported by the next step()

This is the only decode loop of the project: `InferencePipeline`, the benchmarks and the server's
engine thread all drive it. It is single-threaded and holds no locks; one owner calls admit,
cancel and step.

How a step runs:
1. Rows cancelled since the last step leave their slot and are reported ("cancelled").
2. A decoding row whose cache row is full slides its window: the row is reset and its last
   block_size // 2 tokens become pending input again, like a prompt (recomputed in one chunk).
3. Rows with pending input (a new prompt, a slid window) are prefilled in chunks, oldest first,
   within `prefill_budget` tokens per step; the others wait. So a long prompt entering the batch
   delays the decoding rows by one chunk per step, never by the whole prompt.
4. Decoding rows feed their last sampled token as one (R, 1) call over just their slots; rows
   being prefilled go through a second (P, S) call over theirs. Only active slots are computed.
5. Every row whose input is now complete samples one token (per-row settings and generator,
   `sample_batch`); rows that finish (end-of-text, a stop sequence, max tokens) are reported
   and free their slot at once, so the next admit can reuse it.

A freed slot's cache storage is zeroed on reuse (`KVCache.reset`), so nothing of its previous
occupant (not even a NaN) reaches the next sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nanollm.model import GPT
from nanollm.sampling import sample_batch
from nanollm.sequence import SequenceState
from nanollm.tokenizer import Tokenizer


class BatchFullError(RuntimeError):
    """admit() with no free slot."""


@dataclass
class StepOutput:
    """What one row produced in one step.

    token is None only for a row that ended without sampling (cancelled). `text` is the text
    that is now safe to stream (maybe ""); `finish_reason` is set on the row's last output.
    `top` holds the most likely alternatives (token, logprob) when the row asked for them.
    """

    slot: int
    sequence: SequenceState
    token: int | None
    logprob: float | None
    text: str
    finish_reason: str | None
    top: list[tuple[int, float]] | None = None


@dataclass
class _Row:
    """A slot's occupant: its sequence and the tokens it must still feed before sampling."""

    sequence: SequenceState
    pending: list[int] = field(default_factory=list)
    order: int = 0  # admission order: older prompts are prefilled first
    # Scoring the prompt (SequenceState.prompt_logprobs): the log-distribution (V,) at the last
    # token of the previous chunk, which predicts the first token of the next one.
    carry: torch.Tensor | None = None


class DecodeBatch:
    """Up to `max_batch_size` sequences sharing one model and one KV cache."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, *, max_batch_size: int = 16,
                 max_len: int | None = None, prefill_budget: int | None = 512) -> None:
        """max_len: cache slots per row (default and maximum: the model's block_size); a row
        that fills it slides its window. prefill_budget: prompt tokens computed per step over all
        rows being prefilled (None: no limit, every pending prompt enters in one step)."""
        block = model.config.block_size
        if block < 2:
            raise ValueError(f"block_size {block} leaves no room to generate; it must be >= 2")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_len is not None and not 2 <= max_len <= block:
            raise ValueError(f"max_len must be in [2, {block}], got {max_len}")
        if prefill_budget is not None and prefill_budget < 1:
            raise ValueError(f"prefill_budget must be >= 1 or None, got {prefill_budget}")
        self.model = model
        self.tokenizer = tokenizer
        self.prefill_budget = prefill_budget
        self.device = next(model.parameters()).device
        self.cache = model.new_cache(max_batch_size, max_len or block)
        self.window_keep = max(1, block // 2)  # tokens kept when a row's window slides
        self._rows: list[_Row | None] = [None] * max_batch_size
        self._lengths = [0] * max_batch_size  # host copy of cache.lengths: no sync per step
        self._admitted = 0

    # ------------------------------------------------------------------------------------------
    # occupancy

    @property
    def max_batch_size(self) -> int:
        return len(self._rows)

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    @property
    def num_active(self) -> int:
        """Rows holding a sequence (prefilling, decoding, or cancelled and not yet reported)."""
        return sum(row is not None for row in self._rows)

    @property
    def free_slots(self) -> int:
        return self.max_batch_size - self.num_active

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the KV cache by active rows (for a usage gauge: / capacity)."""
        return sum(n for n, row in zip(self._lengths, self._rows, strict=True) if row is not None)

    @property
    def capacity(self) -> int:
        return self.max_batch_size * self.max_len

    def sequence(self, slot: int) -> SequenceState | None:
        row = self._rows[slot]
        return None if row is None else row.sequence

    # ------------------------------------------------------------------------------------------
    # admission and cancellation (between steps)

    @torch.inference_mode()
    def admit(self, sequence: SequenceState) -> int:
        """Put a new sequence into the lowest free slot; returns the slot. Its prompt is
        prefilled over the next step(s). Raises BatchFullError, or ValueError for a sequence
        that has finished or a prompt that does not fit the cache row."""
        if sequence.finished:
            raise ValueError("cannot admit a finished sequence")
        n = len(sequence.prompt_ids)
        if not 1 <= n <= self.max_len:
            raise ValueError(f"prompt of {n} tokens does not fit: it must hold 1 to "
                             f"{self.max_len} tokens")
        try:
            slot = self._rows.index(None)
        except ValueError:
            raise BatchFullError(f"all {self.max_batch_size} slots are busy") from None
        self._reset(slot)
        self._admitted += 1
        self._rows[slot] = _Row(sequence, list(sequence.prompt_ids), self._admitted)
        return slot

    def cancel(self, slot: int) -> None:
        """End the sequence in `slot`; the next step() frees the slot and reports it."""
        row = self._rows[slot]
        if row is None:
            raise ValueError(f"slot {slot} is empty")
        row.sequence.cancel()

    # ------------------------------------------------------------------------------------------
    # the step

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        """Run one decode step over the active rows (see the module docstring)."""
        outputs = self._release_cancelled()
        decode, prefill, chunks = self._plan_feeds()
        logits: list[torch.Tensor] = []
        sampling: list[int] = []
        if decode:
            last = [self._rows[s].sequence.token_ids[-1] for s in decode]  # type: ignore[union-attr]
            idx = torch.tensor(last, dtype=torch.long, device=self.device)[:, None]  # (R, 1)
            logits.append(self.model.forward_cached(idx, self.cache, rows=decode))  # (R, V)
            for slot in decode:
                self._lengths[slot] += 1
            sampling += decode
        if prefill:
            out = self._prefill(prefill, chunks)  # (P, V)
            done = [i for i, s in enumerate(prefill) if not self._rows[s].pending]  # type: ignore[union-attr]
            scored = [i for i in done if self._rows[prefill[i]].sequence.max_tokens == 0]  # type: ignore[union-attr]
            for i in scored:  # prompt scoring only: the row ends without sampling
                outputs.append(self._end_unsampled(prefill[i]))
            done = [i for i in done if i not in scored]
            if done:
                logits.append(out if len(done) == len(prefill) else out[done])
                sampling += [prefill[i] for i in done]
        if sampling:
            outputs += self._sample(sampling, torch.cat(logits) if len(logits) > 1 else logits[0])
        return outputs

    def _release_cancelled(self) -> list[StepOutput]:
        outputs = []
        for slot, row in enumerate(self._rows):
            if row is not None and row.sequence.finished:
                outputs.append(StepOutput(slot, row.sequence, None, None, "",
                                          row.sequence.finish_reason))
                self._rows[slot] = None
        return outputs

    def _plan_feeds(self) -> tuple[list[int], list[int], list[int]]:
        """Split active rows into decoding slots and prefilling slots (with their chunk sizes)."""
        decode: list[int] = []
        waiting: list[tuple[int, int]] = []  # (admission order, slot)
        for slot, row in enumerate(self._rows):
            if row is None:
                continue
            if not row.pending and self._lengths[slot] >= self.max_len:
                self._slide(slot, row)
            if row.pending:
                waiting.append((row.order, slot))
            else:
                decode.append(slot)
        prefill: list[int] = []
        chunks: list[int] = []
        budget = self.prefill_budget
        for _, slot in sorted(waiting):
            pending = len(self._rows[slot].pending)  # type: ignore[union-attr]
            take = pending if budget is None else min(pending, budget)
            if take == 0:
                break
            prefill.append(slot)
            chunks.append(take)
            if budget is not None:
                budget -= take
        return decode, prefill, chunks

    def _slide(self, slot: int, row: _Row) -> None:
        """The row's window is full: restart it from its last window_keep tokens."""
        seq = row.sequence
        row.pending = (seq.prompt_ids + seq.token_ids)[-self.window_keep:]
        self._reset(slot)

    def _prefill(self, slots: list[int], chunks: list[int]) -> torch.Tensor:
        """Feed each slot its next chunk of pending tokens: one (P, S) call -> (P, V) logits.
        Rows scoring their prompt need every position's logits: then the call returns them
        all and each row's last real position is picked out."""
        S = max(chunks)
        idx = torch.zeros(len(slots), S, dtype=torch.long)  # (P, S), right-padded
        rows = [self._rows[slot] for slot in slots]
        for i, (slot, row, take) in enumerate(zip(slots, rows, chunks, strict=True)):
            assert row is not None
            idx[i, :take] = torch.tensor(row.pending[:take], dtype=torch.long)
            del row.pending[:take]
            self._lengths[slot] += take
        num_new = None if min(chunks) == S else torch.tensor(chunks, device=self.device)
        scoring = [i for i, row in enumerate(rows) if row.sequence.prompt_logprobs is not None  # type: ignore[union-attr]
                   and not row.sequence.token_ids]  # type: ignore[union-attr]
        if not scoring:
            return self.model.forward_cached(idx.to(self.device), self.cache, num_new, rows=slots)
        every = self.model.forward_cached(idx.to(self.device), self.cache, num_new, rows=slots,
                                          all_logits=True)  # (P, S, V)
        for i in scoring:
            self._score(rows[i], idx[i, : chunks[i]].tolist(), every[i, : chunks[i]])  # type: ignore[arg-type]
        last = torch.tensor(chunks, device=every.device) - 1
        return every[torch.arange(len(slots), device=every.device), last]  # (P, V)

    def _score(self, row: _Row, tokens: list[int], logits: torch.Tensor) -> None:
        """Record the log-probability of each prompt token of a chunk (T tokens, (T, V)
        logits): the first from the previous chunk's last position, the others from the
        position before them. The model's own distribution, over the tokenizer's vocabulary."""
        seq = row.sequence
        V = self.tokenizer.vocab_size
        log_probs = torch.log_softmax(logits[:, :V].float(), dim=-1)  # (T, V)
        if row.carry is None:  # the prompt's first token has no log-probability
            dists, predicted = log_probs[:-1], tokens[1:]  # (T-1, V)
        else:
            dists, predicted = torch.cat([row.carry[None], log_probs[:-1]]), tokens  # (T, V)
        row.carry = log_probs[-1] if row.pending else None
        if not predicted:
            return
        ids = torch.tensor(predicted, device=dists.device)[:, None]  # (N, 1)
        seq.prompt_logprobs.extend(dists.gather(1, ids)[:, 0].tolist())  # type: ignore[union-attr]
        if seq.prompt_top_logprobs is not None:
            values, best = torch.topk(dists, min(seq.config.top_logprobs, V), dim=-1)  # (N, k)
            seq.prompt_top_logprobs.extend(
                list(zip(b, v, strict=True)) for b, v in zip(best.tolist(), values.tolist(),
                                                            strict=True))

    def _end_unsampled(self, slot: int) -> StepOutput:
        """A row that only scored its prompt (max_tokens = 0) ends now."""
        row = self._rows[slot]
        assert row is not None
        row.sequence.finish_unsampled()
        self._rows[slot] = None
        return StepOutput(slot, row.sequence, None, None, "", row.sequence.finish_reason)

    def _sample(self, slots: list[int], logits: torch.Tensor) -> list[StepOutput]:
        """One token for each slot from its (R, V) logits row; finished rows leave."""
        # A model may pad its vocabulary (50304 for 50257): padding ids are never sampled.
        logits = logits[:, : self.tokenizer.vocab_size]
        rows = [self._rows[s] for s in slots]
        samples = sample_batch([r.sequence.sampler for r in rows], logits)  # type: ignore[union-attr]
        outputs = []
        for slot, row, sample in zip(slots, rows, samples, strict=True):
            seq = row.sequence  # type: ignore[union-attr]
            text = seq.append(sample.token, sample.logprob, sample.top)
            outputs.append(StepOutput(slot, seq, sample.token, sample.logprob, text,
                                      seq.finish_reason, sample.top))
            if seq.finished:
                self._rows[slot] = None
        return outputs

    def _reset(self, slot: int) -> None:
        self.cache.reset([slot])
        self._lengths[slot] = 0
