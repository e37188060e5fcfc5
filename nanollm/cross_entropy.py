"""Mean cross-entropy over a large vocabulary, computed in row chunks that stay in cache.

    loss = cross_entropy(logits, targets)          # logits: (N, V), targets: (N,) -> 0-d fp32

The value equals `F.cross_entropy(logits.float(), targets, ignore_index=-1)`; only the memory
traffic differs. With GPT-2's vocabulary the logits of one batch are large (8 x 256 rows x 50304
columns = 412 MB in fp32), and PyTorch's path makes several full passes and allocations over that
size: log_softmax writes an (N, V) output that autograd keeps, nll_loss's backward zero-fills an
(N, V) gradient, log_softmax's backward reads both and writes a third. On a CPU those passes cost
about as much as the output matmul itself. Here:

- forward: log_softmax of a few rows at a time (a temp that fits in cache); only the target
  column of each row is kept. Nothing of size (N, V) is written.
- backward: the gradient `(softmax(logits) - onehot(target)) * grad / n` is written once, chunk
  by chunk, straight into the (N, V) result (fp32; bf16 goes through an fp32 chunk).
- low-precision logits (bf16 under autocast) are upcast per chunk, never as a full fp32 copy,
  and the gradient is returned in the logits' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Elements per chunk. CPU: 1.6M fp32 = 6.4 MB (32 rows of GPT-2's vocabulary), inside the L3
# cache and under glibc's mmap threshold, so the temp is reused instead of page-faulted in each
# time. GPU: chunks only bound the temp's size; large ones keep the kernel launches few.
CHUNK_ELEMENTS = {"cpu": 32 * 50304}
DEFAULT_CHUNK_ELEMENTS = 1 << 26


def chunk_rows(logits: torch.Tensor) -> int:
    budget = CHUNK_ELEMENTS.get(logits.device.type, DEFAULT_CHUNK_ELEMENTS)
    return max(1, budget // max(1, logits.shape[1]))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                ignore_index: int) -> torch.Tensor:
        N, step = logits.shape[0], chunk_rows(logits)
        valid = targets != ignore_index  # (N,)
        safe = torch.where(valid, targets, 0)[:, None]  # (N, 1); ignored rows read column 0
        picked = torch.empty(N, dtype=torch.float32, device=logits.device)  # log p(target)
        for start in range(0, N, step):
            rows = slice(start, start + step)
            logp = F.log_softmax(logits[rows], dim=-1, dtype=torch.float32)  # (rows, V) temp
            picked[rows] = logp.gather(1, safe[rows]).squeeze(1)
        # PyTorch's own reduction over the picked column (same summation order, same nan when
        # every target is ignored), so the value matches F.cross_entropy bit for bit.
        loss = F.nll_loss(picked[:, None], torch.where(valid, 0, ignore_index),
                          ignore_index=ignore_index)
        count = valid.sum()
        ctx.save_for_backward(logits, safe, valid, count)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        logits, safe, valid, count = ctx.saved_tensors
        N, step = logits.shape[0], chunk_rows(logits)
        row_scale = (valid * (grad_loss / count)).to(torch.float32)[:, None]  # (N, 1)
        grad = torch.empty_like(logits)  # (N, V) in the logits' dtype
        in_place = grad.dtype == torch.float32  # else: an fp32 temp per chunk, then cast
        for start in range(0, N, step):
            rows = slice(start, start + step)
            probs = torch.softmax(logits[rows], dim=-1, dtype=torch.float32,
                                  out=grad[rows] if in_place else None)  # (rows, V)
            # d loss / d logits = (softmax - onehot(target)) * grad / n; zero on ignored rows.
            probs.scatter_add_(1, safe[rows], torch.full_like(probs[:, :1], -1.0))
            probs.mul_(row_scale[rows])
            if not in_place:
                grad[rows].copy_(probs)
        return grad, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -1) -> torch.Tensor:
    """Mean of -log softmax(logits)[target] over rows whose target is not `ignore_index`.

    logits: (N, V) any float dtype; targets: (N,) int64. Returns a 0-d fp32 tensor.
    """
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy expects logits (N, V) and targets (N,), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    return _ChunkedCrossEntropy.apply(logits, targets, ignore_index)
