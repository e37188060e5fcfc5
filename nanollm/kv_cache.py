"""A preallocated key/value cache with one length per row, and the plan of one cached step.

Rows are independent sequences that may hold different numbers of tokens, which is what batched
sampling and continuous batching need. Writes go into fixed storage, so a decode step never
reallocates or concatenates (transformers' `torch.cat` cache copies the whole cache on every
token).

`KVCache.plan(idx_len, num_new)` decides, once per forward_cached call, where each new token goes
and what it may attend to; every layer reuses that plan. When all rows sit at the same position
and add the same number of tokens (a fresh prefill, or decoding the samples of one prompt) the
plan is a plain slice with no per-row mask, which is the cheap path for attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CachedStep:
    """Where one call's S new tokens per row go and which cached keys each of them may see.

    positions: (S,) when every row is aligned, else (B, S) absolute positions of the new
        tokens (padding clamped to a real position); they index the position embedding.
    write_pos: the first slot of every row (aligned), or (B, S) slots per token, padding sent to
        the scratch slot.
    kv_len: attention reads slots [0, kv_len) of every row.
    mask: None, or (1 or B, 1, S, kv_len) bool, True where a query may attend to a key.
    is_causal: without a mask: queries and keys both start at slot 0 (a prefill of empty rows).
        With neither, every query sees all kv_len keys (one new token per aligned row).
    lengths: (B,) row lengths after the step.
    """

    positions: torch.Tensor
    write_pos: torch.Tensor | int
    kv_len: int
    mask: torch.Tensor | None
    is_causal: bool
    lengths: torch.Tensor


class KVCache:
    """Keys and values for every layer: (n_layer, B, n_head, max_len + 1, head_dim).

    The extra slot at index `max_len` is a scratch slot: padding tokens write there, so they can
    never overwrite a real entry, and attention never reads it (it reads the first kv_len slots).
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if min(n_layer, batch_size, n_head, max_len, head_dim) < 1:
            raise ValueError("KVCache sizes must all be at least 1, got "
                             f"n_layer={n_layer} batch_size={batch_size} n_head={n_head} "
                             f"max_len={max_len} head_dim={head_dim}")
        shape = (n_layer, batch_size, n_head, max_len + 1, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # tokens per row

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def scratch_position(self) -> int:
        return self.max_len

    def plan(self, S: int, num_new: torch.Tensor | None = None,
             limit: int | None = None) -> CachedStep:
        """Plan a step that adds up to S tokens per row (num_new (B,) real ones, default all S).

        Raises ValueError when a row would grow past max_len (or past `limit`, the model's
        block_size).
        """
        B = self.batch_size
        device = self.lengths.device
        starts = self.lengths.tolist()  # one host sync per step; B is small
        if num_new is None:
            counts = [S] * B
            num_new = torch.full((B,), S, dtype=torch.long, device=device)
        else:
            if num_new.shape != (B,):
                raise ValueError(f"num_new must have shape ({B},), got {tuple(num_new.shape)}")
            counts = num_new.tolist()
            if min(counts) < 0 or max(counts) > S:
                raise ValueError(f"num_new must be in [0, {S}], got {counts}")
        ends = [s + n for s, n in zip(starts, counts, strict=True)]
        kv_len = max(ends)
        cap = self.max_len if limit is None else min(self.max_len, limit)
        if kv_len > cap:
            raise ValueError(f"sequence would reach {kv_len} tokens; the limit is {cap}")
        lengths = self.lengths + num_new

        start = starts[0]
        if all(s == start for s in starts) and all(n == S for n in counts):
            positions = torch.arange(start, start + S, device=device)  # (S,)
            if S == 1 or start == 0:
                # One new token sees every cached key; a prefill of empty rows is plain causal.
                return CachedStep(positions, start, kv_len, None, S > 1, lengths)
            key_pos = torch.arange(kv_len, device=device)
            mask = key_pos[None, :] <= positions[:, None]  # (S, kv_len)
            return CachedStep(positions, start, kv_len, mask[None, None], False, lengths)

        # Rows at different positions: per-row slots, positions and causal mask.
        steps = torch.arange(S, device=device)
        nominal = self.lengths[:, None] + steps[None, :]  # (B, S)
        valid = steps[None, :] < num_new[:, None]  # (B, S)
        # Padding writes to the scratch slot, never over a real entry; its query position is
        # clamped so every query sees at least one key (no NaN rows).
        write_pos = torch.where(valid, nominal, self.scratch_position)
        positions = nominal.clamp(max=kv_len - 1)
        key_pos = torch.arange(kv_len, device=device)
        mask = (key_pos[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, S, kv_len)
        return CachedStep(positions, write_pos, kv_len, mask, False, lengths)

    def write(self, layer: int, positions: torch.Tensor | int, k: torch.Tensor, v: torch.Tensor,
              kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, S, hs) at slots `positions` (B, S), or at slots start .. start+S-1
        of every row when `positions` is an int; return views of the first kv_len slots."""
        if isinstance(positions, int):
            S = k.shape[2]
            self.k[layer, :, :, positions:positions + S] = k
            self.v[layer, :, :, positions:positions + S] = v
        else:
            B, H, S, D = k.shape
            index = positions[:, None, :, None].expand(B, H, S, D)
            self.k[layer].scatter_(2, index, k)
            self.v[layer].scatter_(2, index, v)
        return self.k[layer, :, :, :kv_len], self.v[layer, :, :, :kv_len]

    def reset(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Forget the tokens of some rows (all rows by default); storage is reused."""
        # A new tensor rather than an in-place write: lengths set inside forward_cached are
        # inference tensors, which cannot be modified outside inference mode.
        lengths = self.lengths.clone()
        if rows is None:
            lengths.zero_()
        else:
            lengths[torch.as_tensor(rows, dtype=torch.long, device=lengths.device)] = 0
        self.lengths = lengths
