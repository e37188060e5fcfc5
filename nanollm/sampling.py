"""Next-token sampling for one sequence, with a vectorised helper for a batch of sequences.

A `Sampler` belongs to ONE sequence: it owns that sequence's `torch.Generator` (so a seed
reproduces the same draws whatever else shares the batch, given the same logits: see sample_batch
for when a model's logits are not the same) and the token history the penalties need. Logits go
through these steps, in this order:

    1. repetition penalty   (HF semantics) over prompt + generated tokens: a seen token's logit is
                            divided by the penalty when positive, multiplied when negative
    2. presence/frequency   (OpenAI semantics) over generated tokens only:
                            logit -= frequency_penalty * count + presence_penalty * (count > 0)
    3. temperature          logits / T; T == 0 means greedy argmax and never touches the RNG
    4. top-k                keep the k largest (0 = off)
    5. top-p                keep the smallest set of tokens whose mass is >= p (the most likely
                            token is always kept; 1 = off)
    6. draw                 torch.multinomial(probs, 1, generator=sampler.generator)

Logprobs are the log-softmax of the distribution actually sampled from (after steps 1-5), taken at
the chosen token. For greedy decoding that distribution is a point mass, so greedy logprobs come
from the penalised logits at temperature 1 (after steps 1-2). `top_logprobs = N` adds the N most
likely tokens of that same distribution, best first (fewer when top-k/top-p kept fewer).

    sampler = Sampler(GenerationConfig(temperature=0.7, top_k=50, seed=1), prompt_ids=[15496])
    out = sampler.sample(logits)                     # logits: (V,) -> Sample(token, logprob)
    outs = sample_batch([s1, s2], logits2)           # logits2: (2, V); vectorised processing
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanollm.config import GenerationConfig

# Top-p with top-k off first looks for the nucleus among this many best tokens (exact: it falls
# back to a full sort when they hold less than p of the mass).
NUCLEUS_PREFILTER = 1024
# Seeds live in [0, 2**63) so they round-trip through int64 fields (protobuf, JSON, torch).
SEED_MODULUS = 2**63


def random_seed() -> int:
    """A fresh seed from the OS entropy pool, recorded so the output can be reproduced."""
    return secrets.randbelow(SEED_MODULUS)


def row_seed(seed: int, row: int) -> int:
    """Seed of sample `row` in a request: row 0 uses the request seed, row i uses seed + i.

    So `num_samples=4, seed=s` gives four different samples, and sample i alone is reproduced by
    `num_samples=1, seed=s + i`.
    """
    return (seed + row) % SEED_MODULUS


@dataclass
class Sample:
    """One sampled token and, when asked for, its log-probability and the most likely
    alternatives as (token, logprob) pairs, best first."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def _top(log_probs: torch.Tensor, n: int, ids: torch.Tensor | None = None
         ) -> list[tuple[int, float]]:
    """The n best entries of a (V,) log-distribution as (token, logprob), best first. With
    `ids`, log_probs is already sorted best first and ids[i] is the token of entry i."""
    n = min(n, log_probs.shape[0])
    if ids is None:
        values, ids = torch.topk(log_probs, n)
    else:
        values, ids = log_probs[:n], ids[:n]
    return list(zip(ids.tolist(), values.tolist(), strict=True))


class Sampler:
    """Sampling state of one sequence: settings, RNG and the token history for penalties."""

    def __init__(
        self,
        config: GenerationConfig,
        prompt_ids: Sequence[int] = (),
        *,
        seed: int | None = None,
    ) -> None:
        """`seed` overrides `config.seed` (the pipeline passes per-row seeds); None in both
        draws a random seed, which `.seed` then reports."""
        self.config = config
        chosen = seed if seed is not None else config.seed
        self.seed: int = random_seed() if chosen is None else int(chosen)
        if not 0 <= self.seed < SEED_MODULUS:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        self.prompt_ids: list[int] = list(prompt_ids)
        self.output_ids: list[int] = []  # every token this sampler has drawn, in order
        self._generator: torch.Generator | None = None

    @property
    def greedy(self) -> bool:
        return self.config.temperature == 0.0

    @property
    def uses_seen_tokens(self) -> bool:
        return self.config.repetition_penalty != 1.0

    @property
    def uses_counts(self) -> bool:
        return self.config.presence_penalty != 0.0 or self.config.frequency_penalty != 0.0

    def generator(self, device: torch.device) -> torch.Generator:
        """The sequence's RNG, created on the logits' device on first use (multinomial needs
        the generator and the probabilities on the same device)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) raw logits -> (V,) float32 logits after steps 1-5; filtered tokens are -inf.
        For greedy sampling: the penalised logits (steps 1-2)."""
        return process_batch([self], logits[None])[0]

    def sample(self, logits: torch.Tensor) -> Sample:
        """Draw the next token from (V,) logits and append it to `output_ids`."""
        return sample_batch([self], logits[None])[0]


# ----------------------------------------------------------------------------------------------
# batch helpers: rows may have different settings; each row keeps its own generator


def _column(samplers: Sequence[Sampler], name: str, device: torch.device) -> torch.Tensor:
    """A per-row setting as a (R, 1) float32 tensor."""
    values = [float(getattr(s.config, name)) for s in samplers]
    return torch.tensor(values, dtype=torch.float32, device=device)[:, None]


def _padded_ids(id_lists: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    """Ragged token lists -> (R, L) long tensor padded with `pad` (an out-of-vocab column)."""
    width = max(1, max(len(ids) for ids in id_lists))
    rows = [ids + [pad] * (width - len(ids)) for ids in id_lists]
    return torch.tensor(rows, dtype=torch.long, device=device)


def apply_penalties(samplers: Sequence[Sampler], logits: torch.Tensor) -> torch.Tensor:
    """Steps 1-2 on (B, V) logits in place; returns them. Rows without penalties are untouched."""
    V = logits.shape[1]
    device = logits.device
    rep = [i for i, s in enumerate(samplers) if s.uses_seen_tokens]
    if rep:
        subset = [samplers[i] for i in rep]
        ids = _padded_ids([s.prompt_ids + s.output_ids for s in subset], V, device)  # (R, L)
        seen = torch.zeros(len(rep), V + 1, dtype=torch.bool, device=device)
        seen.scatter_(1, ids, True)
        seen = seen[:, :V]  # (R, V); column V collected the padding
        penalty = _column(subset, "repetition_penalty", device)  # (R, 1)
        rows = logits[rep]
        penalised = torch.where(rows > 0, rows / penalty, rows * penalty)
        logits[rep] = torch.where(seen, penalised, rows)
    cnt = [i for i, s in enumerate(samplers) if s.uses_counts]
    if cnt:
        subset = [samplers[i] for i in cnt]
        ids = _padded_ids([s.output_ids for s in subset], V, device)  # (R, L)
        counts = torch.zeros(len(cnt), V + 1, dtype=torch.float32, device=device)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
        counts = counts[:, :V]  # (R, V) occurrences of each token in the output so far
        freq = _column(subset, "frequency_penalty", device)
        presence = _column(subset, "presence_penalty", device)
        logits[cnt] -= freq * counts + presence * (counts > 0).float()
    return logits


def _filtered(sampler: Sampler, vocab_size: int) -> bool:
    """Whether top-k or top-p removes anything for this row."""
    return 0 < sampler.config.top_k < vocab_size or sampler.config.top_p < 1.0


def _sorted_candidates(
    logits: torch.Tensor, ks: list[int], top_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best candidates of each (R, V) row, sorted: (values, ids), both (R, K).

    K covers every row's possible survivors: its top_k, or for a row with top-k off (only here
    for top-p) the nucleus. A full sort of 50k logits costs milliseconds per row on CPU, so the
    nucleus is first looked for among the best NUCLEUS_PREFILTER tokens; when they hold mass
    >= p in every such row (nearly always for a trained model) the nucleus lies inside them.
    """
    V = logits.shape[1]
    if all(k > 0 for k in ks):
        return torch.topk(logits, max(ks), dim=-1)  # sorted, best first
    width = max(NUCLEUS_PREFILTER, *ks)
    if width < V:
        values, ids = torch.topk(logits, width, dim=-1)
        open_rows = [i for i, k in enumerate(ks) if k == 0]
        covered = (torch.logsumexp(values[open_rows], -1)
                   - torch.logsumexp(logits[open_rows], -1)).exp()  # mass of the best `width`
        if bool((covered >= top_p[open_rows, 0]).all()):
            return values, ids
    return torch.sort(logits, dim=-1, descending=True)


def _candidates(
    samplers: Sequence[Sampler], logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-5 for non-greedy rows of penalised (R, V) logits.

    Returns (values, token_ids), both (R, K): each row's tempered logits, best first, with
    filtered-out candidates at -inf, so the kept candidates are a prefix of every row.
    """
    V = logits.shape[1]
    device = logits.device
    logits = logits / _column(samplers, "temperature", device)
    ks = [s.config.top_k if 0 < s.config.top_k < V else 0 for s in samplers]  # 0: keep all
    p = _column(samplers, "top_p", device)  # (R, 1); 1.0 rows drop nothing
    values, ids = _sorted_candidates(logits, ks, p)
    K = values.shape[1]
    rank = torch.arange(K, device=device)[None, :]  # (1, K)
    if any(ks):
        k = torch.tensor([k or K for k in ks], device=device)[:, None]  # (R, 1)
        values = values.masked_fill(rank >= k, float("-inf"))
    if any(s.config.top_p < 1.0 for s in samplers):
        # Top-p sees the distribution left by top-k: renormalised over the k kept tokens, or
        # over the whole vocabulary when top-k is off (values may hold only a prefix of it).
        norm = torch.logsumexp(values, dim=-1)  # (R,)
        open_rows = [i for i, k in enumerate(ks) if k == 0]
        if open_rows:
            norm[open_rows] = torch.logsumexp(logits[open_rows], dim=-1)
        probs = (values - norm[:, None]).exp()  # (R, K)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better candidates
        drop = (mass_before >= p) & (p < 1.0) & (rank > 0)  # rank 0 always stays
        values = values.masked_fill(drop, float("-inf"))
    return values, ids


def process_batch(samplers: Sequence[Sampler], logits: torch.Tensor) -> torch.Tensor:
    """(B, V) raw logits -> (B, V) float32 processed logits (see the module docstring)."""
    if len(samplers) != logits.shape[0]:
        raise ValueError(f"{len(samplers)} samplers for {logits.shape[0]} rows of logits")
    out = apply_penalties(samplers, logits.float().clone())
    V = out.shape[1]
    plain = [i for i, s in enumerate(samplers) if not s.greedy and not _filtered(s, V)]
    if plain:
        out[plain] = out[plain] / _column([samplers[i] for i in plain], "temperature", out.device)
    filtered = [i for i, s in enumerate(samplers) if not s.greedy and _filtered(s, V)]
    if filtered:
        values, ids = _candidates([samplers[i] for i in filtered], out[filtered])
        full = torch.full((len(filtered), V), float("-inf"), device=out.device)
        out[filtered] = full.scatter(1, ids, values)
    return out


def sample_batch(samplers: Sequence[Sampler], logits: torch.Tensor) -> list[Sample]:
    """Draw one token per row of (B, V) logits; row b uses samplers[b]'s settings and RNG.

    The processing is vectorised over the batch; only the draw runs per row: one multinomial,
    with the row's own generator, over exactly that row's candidates (its kept top-k/top-p
    tokens best first, or the whole vocabulary in id order when nothing is filtered). So a seeded
    sequence draws the same tokens whatever else shares the batch, as long as its logits are the
    same. Each token is appended to its sampler's `output_ids`.

    The model's logits for a sequence can differ in the last bits with what shares its batch:
    the CPU matmul kernel for one row (a batch-1 decode step) sums in another order than the
    one for several rows, and rows at different positions attend over a padded, masked key
    range (cuBLAS, on GPUs, also picks kernels by batch size). In fp32 on CPU the change stays
    below 1e-5 of the largest logit (1e-6 measured at GPT-2 124M's shape,
    tests/test_batch_invariance.py); bf16 and fp16 round more. A draw changes only when its
    random number falls that close to the boundary between two tokens, a greedy step only when
    the two best logits are that close: rare, but over long generations a seeded sequence can
    diverge from its batch-1 run.
    """
    if len(samplers) != logits.shape[0]:
        raise ValueError(f"{len(samplers)} samplers for {logits.shape[0]} rows of logits")
    penalised = logits.float()  # (B, V); a copy only where penalties write into it
    if any(s.uses_seen_tokens or s.uses_counts for s in samplers):
        penalised = apply_penalties(samplers, penalised.clone())
    V = penalised.shape[1]
    tokens: list[int] = [0] * len(samplers)
    logprobs: list[float | None] = [None] * len(samplers)
    tops: list[list[tuple[int, float]] | None] = [None] * len(samplers)

    greedy = [i for i, s in enumerate(samplers) if s.greedy]
    if greedy:
        # All-greedy batches (the common serving case) skip the row gather; the log-softmax
        # over the vocabulary runs only for rows that asked for logprobs.
        rows = penalised if len(greedy) == len(samplers) else penalised[greedy]  # (G, V)
        best = rows.argmax(dim=-1)  # (G,)
        for j, token in enumerate(best.tolist()):
            tokens[greedy[j]] = token
        asked = [j for j, i in enumerate(greedy) if samplers[i].config.logprobs]
        if asked:
            log_probs = F.log_softmax(rows[asked], dim=-1)  # (A, V)
            chosen = log_probs.gather(1, best[asked][:, None])[:, 0].tolist()  # (A,)
            for a, (j, lp) in enumerate(zip(asked, chosen, strict=True)):
                i = greedy[j]
                logprobs[i] = lp
                if samplers[i].config.top_logprobs:
                    tops[i] = _top(log_probs[a], samplers[i].config.top_logprobs)

    plain = [i for i, s in enumerate(samplers) if not s.greedy and not _filtered(s, V)]
    if plain:
        subset = [samplers[i] for i in plain]
        log_probs = F.log_softmax(penalised[plain] / _column(subset, "temperature",
                                                             penalised.device), dim=-1)  # (P, V)
        for j, i in enumerate(plain):
            token = torch.multinomial(log_probs[j].exp(), 1,
                                      generator=subset[j].generator(log_probs.device))
            tokens[i] = int(token)
            if subset[j].config.logprobs:
                logprobs[i] = float(log_probs[j, token])
                if subset[j].config.top_logprobs:
                    tops[i] = _top(log_probs[j], subset[j].config.top_logprobs)

    filtered = [i for i, s in enumerate(samplers) if not s.greedy and _filtered(s, V)]
    if filtered:
        subset = [samplers[i] for i in filtered]
        values, ids = _candidates(subset, penalised[filtered])  # (F, K), kept ones first
        kept = torch.isfinite(values).sum(dim=-1).tolist()  # (F,) length of each kept prefix
        for j, i in enumerate(filtered):
            row_lp = F.log_softmax(values[j, : kept[j]], dim=-1)  # (kept,)
            rank = torch.multinomial(row_lp.exp(), 1, generator=subset[j].generator(values.device))
            tokens[i] = int(ids[j, rank])
            if subset[j].config.logprobs:
                logprobs[i] = float(row_lp[rank])
                if subset[j].config.top_logprobs:  # the kept candidates are sorted best first
                    tops[i] = _top(row_lp, subset[j].config.top_logprobs, ids[j, : kept[j]])

    for s, token in zip(samplers, tokens, strict=True):
        s.output_ids.append(token)
    return [Sample(t, lp, top) for t, lp, top in zip(tokens, logprobs, tops, strict=True)]
