"""A preallocated key/value cache with one length per row.

Rows are independent sequences that may hold different numbers of tokens, which is what batched
sampling and continuous batching need. Writes are a scatter into fixed storage, so a decode step
never reallocates or concatenates (transformers' `torch.cat` cache copies the whole cache on
every token).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values for every layer: (n_layer, B, n_head, max_len + 1, head_dim).

    The extra slot at index `max_len` is a scratch slot: padding tokens write there, so they can
    never overwrite a real entry, and attention never reads it (it reads the first kv_len slots).
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
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

    def write(self, layer: int, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, S, hs) at positions (B, S); return the first kv_len slots."""
        B, H, S, D = k.shape
        index = positions[:, None, :, None].expand(B, H, S, D)
        self.k[layer].scatter_(2, index, k)
        self.v[layer].scatter_(2, index, v)
        return self.k[layer, :, :, :kv_len], self.v[layer, :, :, :kv_len]

    def reset(self, rows: torch.Tensor | list[int] | None = None) -> None:
        """Forget the tokens of some rows (all rows by default); storage is reused."""
        if rows is None:
            self.lengths.zero_()
        else:
            self.lengths[torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)] = 0
