"""The GPT-2 architecture (as in nanoGPT) with a KV cache for incremental decoding.

Training path:   logits, loss = model(idx, targets)                 # idx: (B, T)
Inference path:  cache = model.new_cache(batch_size)
                 logits = model.forward_cached(idx, cache, num_new)  # prefill, then 1 token/step

Parameter names follow nanoGPT (`transformer.h.0.attn.c_attn.weight`, Linear layout (out, in)),
so nanoGPT checkpoints load directly and HF GPT-2 weights only need their Conv1D transposed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm.config import ModelConfig
from nanollm.kv_cache import KVCache

# nanoGPT's name for the model config; the same class.
GPTConfig = ModelConfig


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        shape = (B, T, self.n_head, C // self.n_head)
        return (q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2),
                v.view(shape).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward_cached(
        self, x: torch.Tensor, cache: KVCache, layer: int, write_pos: torch.Tensor,
        mask: torch.Tensor, kv_len: int,
    ) -> torch.Tensor:
        """x: (B, S, C) new tokens stored at write_pos (B, S); mask: (B, 1, S, kv_len) bool."""
        B, S, C = x.shape
        q, k, v = self._heads(x)
        keys, values = cache.write(layer, write_pos, k, v, kv_len)  # (B, nh, kv_len, hs)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, S, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(self, x: torch.Tensor, cache: KVCache, layer: int,
                       write_pos: torch.Tensor, mask: torch.Tensor, kv_len: int) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.ln_1(x), cache, layer, write_pos, mask, kv_len)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection shares the token embedding.
        self.transformer.wte.weight = self.lm_head.weight
        # A contiguous (C, V) copy of the tied weight for inference: `h @ W_t` reads the 50257-row
        # matrix about twice as fast as `F.linear(h, W)` on CPU. Built by prepare_for_inference().
        self._lm_head_t: torch.Tensor | None = None
        self.apply(self._init_weights)
        # GPT-2 paper: scale residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------------------------------
    # sizes

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are excluded by default (as in nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context (e.g. load GPT-2 with 1024 and fine-tune with 256)."""
        if not 0 < block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in [1, {self.config.block_size}], got {block_size}")
        self.config = self.config.replace(block_size=block_size)
        wpe = self.transformer.wpe
        wpe.weight = nn.Parameter(wpe.weight[:block_size].detach().clone())
        wpe.num_embeddings = block_size

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Strict load of a checkpoint state dict, which omits the tied lm_head.weight."""
        sd = dict(state_dict)
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
        self.load_state_dict(sd, strict=True)

    # ------------------------------------------------------------------------------------------
    # training path

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T). Returns all-position logits with targets, else last-position."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # (B, 1, V)
        logits = self.lm_head(x)  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                               ignore_index=-1)
        return logits, loss

    def train(self, mode: bool = True) -> GPT:
        if mode:
            self._lm_head_t = None  # weights will change; drop the inference copy
        return super().train(mode)

    # ------------------------------------------------------------------------------------------
    # inference path

    def prepare_for_inference(self) -> GPT:
        """eval() plus the transposed output matrix used by forward_cached."""
        self.eval()
        self._lm_head_t = self.lm_head.weight.detach().t().contiguous()
        return self

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` rows of up to `max_len` (default block_size)."""
        p = self.lm_head.weight
        return KVCache(
            n_layer=self.config.n_layer, batch_size=batch_size, n_head=self.config.n_head,
            max_len=max_len or self.config.block_size, head_dim=self.config.head_dim,
            device=p.device, dtype=p.dtype,
        )

    def output_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., C) -> logits (..., V)."""
        if self._lm_head_t is not None:
            return h @ self._lm_head_t
        return self.lm_head(h)

    @torch.inference_mode()
    def forward_cached(
        self,
        idx: torch.Tensor,
        cache: KVCache,
        num_new: torch.Tensor | None = None,
        *,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Append tokens to each row's cache and return logits.

        idx: (B, S) new tokens per row, right-padded where a row has fewer than S new tokens.
        num_new: (B,) how many of the S tokens are real in each row (default: all S; 0 leaves a
        row untouched). Rows may hold different lengths already: row b's tokens go to positions
        cache.lengths[b] .. + num_new[b] - 1.
        Returns (B, V) logits at each row's last new token, or (B, S, V) with all_logits.
        """
        B, S = idx.shape
        device = idx.device
        if num_new is None:
            num_new = torch.full((B,), S, dtype=torch.long, device=device)
        start = cache.lengths  # (B,)
        end = start + num_new
        kv_len = int(end.max())
        if kv_len > cache.max_len or kv_len > self.config.block_size:
            raise ValueError(f"sequence would reach {kv_len} tokens; the limit is "
                             f"{min(cache.max_len, self.config.block_size)}")
        nominal = start[:, None] + torch.arange(S, device=device)[None, :]  # (B, S)
        valid = torch.arange(S, device=device)[None, :] < num_new[:, None]  # (B, S)
        # Padding tokens write to the cache's scratch slot, never over a real entry; their
        # query positions are clamped so every query sees at least one key (no NaN rows).
        write_pos = torch.where(valid, nominal, cache.scratch_position)
        positions = nominal.clamp(max=kv_len - 1)
        # Causal mask over absolute positions: a query at p sees keys 0..p of its own row.
        key_pos = torch.arange(kv_len, device=device)
        mask = (key_pos[None, None, :] <= positions[:, :, None])[:, None]  # (B, 1, S, kv_len)

        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        for i, block in enumerate(self.transformer.h):
            x = block.forward_cached(x, cache, i, write_pos, mask, kv_len)
        cache.lengths = end
        if all_logits:
            return self.output_logits(self.transformer.ln_f(x))  # (B, S, V)
        last = (num_new - 1).clamp(min=0)
        h = x[torch.arange(B, device=device), last]  # (B, C)
        return self.output_logits(self.transformer.ln_f(h))  # (B, V)
