"""The GPT-2 architecture (as in nanoGPT) with a KV cache for incremental decoding.

Training path:   logits, loss = model(idx, targets)                 # idx: (B, T)
Inference path:  cache = model.new_cache(batch_size)
                 logits = model.forward_cached(idx, cache, num_new)  # prefill, then 1 token/step

Parameter names follow nanoGPT (`transformer.h.0.attn.c_attn.weight`, Linear layout (out, in)),
so nanoGPT checkpoints load directly and HF GPT-2 weights only need their Conv1D transposed.

Why the inference path is fast on CPU (numbers in docs/performance.md): decoding is bound by
reading the weights, and prepare_for_inference() switches every Linear to oneDNN's matmul, which
reads them about twice as fast as `F.linear` (MKL) does here, on a copy of each weight in
oneDNN's blocked layout from batch 2 up. The cache is written in place, and rows that sit at the
same position (the samples of one prompt) share one slice write and need no attention mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanollm import onednn
from nanollm.config import ModelConfig
from nanollm.cross_entropy import cross_entropy
from nanollm.kv_cache import CachedStep, KVCache

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


def _version(t: torch.Tensor) -> int:
    # Tensors made under inference_mode have no version counter; they cannot change in place
    # outside inference mode either, so 0 is a safe stand-in.
    return 0 if t.is_inference() else t._version


class Linear(nn.Linear):
    """nn.Linear (same parameters, same training forward) plus a fast inference call on CPU.

    After `enable_onednn()`, `infer(x)` runs oneDNN's matmul (the kernel torch.compile uses for
    CPU linears), with GELU fused when asked. On a 2-core Zen 4 it reads GPT-2's weights at
    24-31 GB/s where `F.linear` (MKL) reaches 10-15 GB/s. With `pack=True` it also keeps a copy
    of the weight in oneDNN's blocked layout, 1.3-1.5x faster again from two input rows up,
    at the cost of as much memory as the weight. The copy is rebuilt when the weight changes (an
    in-place update bumps the tensor version; `.to()` moves its storage).
    """

    # oneDNN picks the blocked layout for an expected number of input rows; 8 suits decode
    # batches (2 to 32 rows measured) and still serves a prefill of hundreds of rows.
    PACK_ROWS_HINT = 8

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.onednn = False
        self.packed_weight: torch.Tensor | None = None
        self._packed_key: tuple[int, ...] = ()

    def enable_onednn(self, pack: bool = True) -> bool:
        """Use oneDNN in infer() (and pack the weight); False where it cannot run."""
        self.disable_onednn()
        self.onednn = onednn.available(self.weight.device, self.weight.dtype)
        if self.onednn and pack:
            self._pack()
        return self.onednn

    def disable_onednn(self) -> None:
        """Back to F.linear; frees the packed copy."""
        self.onednn = False
        self.packed_weight = None
        self._packed_key = ()

    def _weight_key(self) -> tuple[int, ...]:
        w, b = self.weight, self.bias
        key = (w.data_ptr(), _version(w))
        return key if b is None else (*key, b.data_ptr(), _version(b))

    def _pack(self) -> None:
        self.packed_weight = onednn.pack_weight(self.weight, self.PACK_ROWS_HINT)
        self._packed_key = self._weight_key()

    def infer(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """x: (..., in) -> (..., out), with GPT-2's tanh GELU applied when `gelu`. No autograd."""
        w = self.weight
        if self.onednn and w.is_cpu and x.dtype == w.dtype:
            if self.packed_weight is not None and self._packed_key != self._weight_key():
                self._pack()  # the weight changed since it was packed
            # One input row (batch-1 decode) reads the plain (out, in) weight a little faster
            # than the blocked copy, which wins from two rows up.
            if self.packed_weight is not None and x.numel() != x.shape[-1]:
                w = self.packed_weight
            return onednn.linear(x, w, self.bias, gelu)
        y = F.linear(x, w, self.bias)
        return F.gelu(y, approximate="tanh") if gelu else y

    def __getstate__(self) -> dict:
        # The packed copy is an opaque oneDNN tensor that cannot be copied or pickled;
        # copies start without it and pack again on prepare_for_inference().
        state = dict(super().__getstate__())
        state["onednn"], state["packed_weight"], state["_packed_key"] = False, None, ()
        return state


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv: (B, T, 3C) -> q, k, v each (B, nh, T, hs)."""
        B, T, _ = qkv.shape
        shape = (B, T, self.n_head, self.n_embd // self.n_head)
        q, k, v = qkv.split(self.n_embd, dim=2)
        return (q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2),
                v.view(shape).transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._heads(self.c_attn(x))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward_cached(self, x: torch.Tensor, cache: KVCache, layer: int,
                       step: CachedStep) -> torch.Tensor:
        """x: (B, S, C) new tokens, written to the cache where `step` says."""
        B, S, C = x.shape
        q, k, v = self._heads(self.c_attn.infer(x))
        keys, values = cache.write(layer, step, k, v)  # (B, nh, kv_len, hs)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=step.mask,
                                           is_causal=step.is_causal)  # (B, nh, S, hs)
        y = y.transpose(1, 2).reshape(B, S, C)
        return self.c_proj.infer(y)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers).
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))

    def forward_cached(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj.infer(self.c_fc.infer(x, gelu=True))


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
                       step: CachedStep) -> torch.Tensor:
        x = x + self.attn.forward_cached(self.ln_1(x), cache, layer, step)
        return x + self.mlp.forward_cached(self.ln_2(x))


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
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection shares the token embedding.
        self.transformer.wte.weight = self.lm_head.weight
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
            raise ValueError(
                f"block_size must be in [1, {self.config.block_size}], got {block_size}")
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
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx, targets: (B, T). Returns all-position logits with targets, else last-position.

        return_logits=False (a training step that only needs the loss): logits come back as
        None and the loss writes its gradient over their memory instead of a new (B*T, V) buffer.
        """
        T = idx.shape[1]
        if self.config.block_size < T:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # (B, 1, V)
        logits = self.lm_head(x)  # (B, T, V)
        # Same value as F.cross_entropy(logits.float(), ...), without its (B*T, V) temporaries.
        loss = cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                             reuse_logits=not return_logits)
        return (logits if return_logits else None), loss

    def train(self, mode: bool = True) -> GPT:
        if mode:
            for m in self._linears():
                m.disable_onednn()  # weights will change; free the inference copies
        return super().train(mode)

    # ------------------------------------------------------------------------------------------
    # inference path

    def prepare_for_inference(self, pack_weights: bool = True) -> GPT:
        """eval(), and on CPU the oneDNN kernels for forward_cached (see Linear).

        pack_weights keeps a blocked copy of every Linear weight: about 1.3x faster decode from
        batch 2 up (docs/performance.md), for as much memory again as the Linear weights. The
        copies are rebuilt if the weights change and freed by train().
        """
        self.eval()
        for m in self._linears():
            m.enable_onednn(pack=pack_weights)
        return self

    @property
    def inference_packed(self) -> bool:
        """Whether forward_cached runs on packed (oneDNN) weights."""
        return self.lm_head.packed_weight is not None

    def _linears(self) -> list[Linear]:
        return [m for m in self.modules() if isinstance(m, Linear)]

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
        return self.lm_head.infer(h)

    @torch.inference_mode()
    def forward_cached(
        self,
        idx: torch.Tensor,
        cache: KVCache,
        num_new: torch.Tensor | None = None,
        *,
        rows: Sequence[int] | None = None,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Append tokens to some rows of the cache and return their logits.

        rows: the cache rows (slots) this call steps, R of them (default: all B rows). Only
        these rows are computed; the others are neither read nor changed.
        idx: (R, S) new tokens per stepped row, right-padded where a row has fewer than S.
        num_new: (R,) how many of the S tokens are real in each row (default: all S; 0 leaves a
        row untouched). Rows may hold different lengths already: row r's tokens go to positions
        cache.lengths[rows[r]] .. + num_new[r] - 1.
        Returns (R, V) logits at each row's last new token, or (R, S, V) with all_logits.
        Raises ValueError when a row would grow past the cache or the model's block_size.
        """
        B, S = idx.shape
        R = cache.batch_size if rows is None else len(rows)
        if R != B:
            raise ValueError(f"idx has {B} rows but {R} cache rows are stepped")
        step = cache.plan(S, num_new, limit=self.config.block_size, rows=rows)
        x = self.transformer.wte(idx) + self.transformer.wpe(step.positions)  # (B, S, C)
        for i, block in enumerate(self.transformer.h):
            x = block.forward_cached(x, cache, i, step)
        cache.lengths = step.lengths
        if all_logits:
            return self.output_logits(self.transformer.ln_f(x))  # (B, S, V)
        if num_new is None or isinstance(step.write_pos, int):
            h = x[:, -1]  # every row's last new token is at S - 1
        else:
            last = (num_new - 1).clamp(min=0)
            h = x[torch.arange(B, device=x.device), last]  # (B, C)
        return self.output_logits(self.transformer.ln_f(h))  # (B, V)
