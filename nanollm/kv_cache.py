"""A preallocated key/value cache with one length per row, and the plan of one cached step.

Rows are independent sequences that may hold different numbers of tokens, which is what batched
sampling and continuous batching need. Writes go into fixed storage, so a decode step never
reallocates or concatenates (transformers' `torch.cat` cache copies the whole cache on every
token).

`KVCache.plan(idx_len, num_new, rows=...)` decides, once per forward_cached call, which cache
rows take part, where each new token goes and what it may attend to; every layer reuses that
plan. A step touches only the rows it names: a contiguous run of rows is a view of the storage
(no copy), any other set is gathered. When all stepped rows sit at the same position and add
the same number of tokens (a fresh prefill, or decoding the samples of one prompt) the plan
needs no per-row mask, which is the cheap path for attention.

A row that is reset (a finished request's slot handed to the next one) has the part of its
storage that its previous occupant used zeroed: attention reads up to the longest row of a step,
and masked-out keys still meet the softmax's zero weights in a matmul, where a NaN or inf left
behind would poison the new row (0 * NaN = NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    lengths: (B,) lengths of ALL cache rows after the step (rows not stepped are unchanged).
    rows: the stepped rows: a slice (contiguous rows, read and written through views) or an
        (R,) index tensor (gathered); tensors above that have a batch dimension have R rows.
    """

    positions: torch.Tensor
    write_pos: torch.Tensor | int
    kv_len: int
    mask: torch.Tensor | None
    is_causal: bool
    lengths: torch.Tensor
    rows: slice | torch.Tensor


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

    def select(self, rows: Sequence[int] | None) -> slice | torch.Tensor:
        """The stepped rows as a slice when they are contiguous and ascending (views, no copy),
        else as an index tensor. None means every row."""
        B = self.batch_size
        if rows is None:
            return slice(0, B)
        rows = list(rows)
        if not rows or min(rows) < 0 or max(rows) >= B or len(set(rows)) != len(rows):
            raise ValueError(f"rows must be distinct indices in [0, {B}), got {rows}")
        first = rows[0]
        if rows == list(range(first, first + len(rows))):
            return slice(first, first + len(rows))
        return torch.tensor(rows, dtype=torch.long, device=self.lengths.device)

    def plan(self, S: int, num_new: torch.Tensor | None = None,
             limit: int | None = None, rows: Sequence[int] | None = None) -> CachedStep:
        """Plan a step that adds up to S tokens to each of `rows` (default: every row);
        num_new (R,) says how many are real per stepped row (default all S).

        Raises ValueError when a row would grow past max_len (or past `limit`, the model's
        block_size).
        """
        sel = self.select(rows)
        device = self.lengths.device
        row_lengths = self.lengths[sel]  # (R,)
        R = row_lengths.shape[0]
        starts = row_lengths.tolist()  # one host sync per step; R is small
        if num_new is None:
            counts = [S] * R
            num_new = torch.full((R,), S, dtype=torch.long, device=device)
        else:
            if num_new.shape != (R,):
                raise ValueError(f"num_new must have shape ({R},), got {tuple(num_new.shape)}")
            counts = num_new.tolist()
            if min(counts) < 0 or max(counts) > S:
                raise ValueError(f"num_new must be in [0, {S}], got {counts}")
        ends = [s + n for s, n in zip(starts, counts, strict=True)]
        kv_len = max(ends)
        cap = self.max_len if limit is None else min(self.max_len, limit)
        if kv_len > cap:
            raise ValueError(f"sequence would reach {kv_len} tokens; the limit is {cap}")
        lengths = self.lengths.clone()
        lengths[sel] = row_lengths + num_new

        start = starts[0]
        if all(s == start for s in starts) and all(n == S for n in counts):
            positions = torch.arange(start, start + S, device=device)  # (S,)
            if S == 1 or start == 0:
                # One new token sees every cached key; a prefill of empty rows is plain causal.
                return CachedStep(positions, start, kv_len, None, S > 1, lengths, sel)
            key_pos = torch.arange(kv_len, device=device)
            mask = key_pos[None, :] <= positions[:, None]  # (S, kv_len)
            return CachedStep(positions, start, kv_len, mask[None, None], False, lengths, sel)

        # Rows at different positions: per-row slots, positions and causal mask.
        steps = torch.arange(S, device=device)
        nominal = row_lengths[:, None] + steps[None, :]  # (R, S)
        valid = steps[None, :] < num_new[:, None]  # (R, S)
        # Padding writes to the scratch slot, never over a real entry; its query position is
        # clamped so every query sees at least one key (no NaN rows).
        write_pos = torch.where(valid, nominal, self.scratch_position)
        positions = nominal.clamp(max=kv_len - 1)
        key_pos = torch.arange(kv_len, device=device)
        mask = (key_pos[None, None, :] <= positions[:, :, None])[:, None]  # (R, 1, S, kv_len)
        return CachedStep(positions, write_pos, kv_len, mask, False, lengths, sel)

    def write(self, layer: int, step: CachedStep, k: torch.Tensor, v: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (R, nh, S, hs) of the stepped rows where `step` says; return their keys
        and values (R, nh, kv_len, hs): views for a contiguous run of rows, else gathered."""
        rows, pos = step.rows, step.write_pos
        if isinstance(rows, slice):
            k_rows, v_rows = self.k[layer, rows], self.v[layer, rows]  # views
            if isinstance(pos, int):
                S = k.shape[2]
                k_rows[:, :, pos:pos + S] = k
                v_rows[:, :, pos:pos + S] = v
            else:
                R, H, S, D = k.shape
                index = pos[:, None, :, None].expand(R, H, S, D)
                k_rows.scatter_(2, index, k)
                v_rows.scatter_(2, index, v)
            return k_rows[:, :, :step.kv_len], v_rows[:, :, :step.kv_len]
        k_all, v_all = self.k[layer], self.v[layer]  # (B, nh, max_len + 1, hs)
        if isinstance(pos, int):
            S = k.shape[2]
            k_all[rows, :, pos:pos + S] = k
            v_all[rows, :, pos:pos + S] = v
        else:
            # Two advanced indices around a slice: the indexed view is (R, S, nh, hs).
            k_all[rows[:, None], :, pos] = k.transpose(1, 2)
            v_all[rows[:, None], :, pos] = v.transpose(1, 2)
        return k_all[rows, :, :step.kv_len], v_all[rows, :, :step.kv_len]

    def reset(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Forget the tokens of some rows (all rows by default), zeroing the storage they used
        (see the module docstring); storage is reused."""
        index = (torch.arange(self.batch_size, device=self.lengths.device) if rows is None
                 else torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device))
        for row, used in zip(index.tolist(), self.lengths[index].tolist(), strict=True):
            if used:
                self.k[:, row, :, :used] = 0
                self.v[:, row, :, :used] = 0
        # A new tensor rather than an in-place write: lengths set inside forward_cached are
        # inference tensors, which cannot be modified outside inference mode.
        lengths = self.lengths.clone()
        lengths[index] = 0
        self.lengths = lengths
