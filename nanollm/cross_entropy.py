"""Mean cross-entropy over a large vocabulary, computed in row chunks that stay in cache.

    loss = cross_entropy(logits, targets)                     # logits (N, V), targets (N,)
    loss = cross_entropy(logits, targets, reuse_logits=True)  # logits are not read afterwards

The value equals `F.cross_entropy(logits.float(), targets, ignore_index=-1)` bit for bit; the
gradient agrees to rounding. Only the memory traffic differs. With GPT-2's vocabulary one batch
of logits is large (8 x 256 rows x 50304 = 412 MB in fp32), and PyTorch's path makes several
passes and fresh allocations of that size: log_softmax writes an (N, V) output that autograd
keeps, nll_loss's backward zero-fills an (N, V) gradient, log_softmax's backward reads both and
writes a third. On a CPU each fresh 412 MB buffer also costs ~100k page faults. Here:

- forward: log_softmax of a few rows at a time (a temp that fits in cache); only the target
  column of each row is kept. Nothing of size (N, V) is allocated.
- backward: `(softmax(logits) - onehot(target)) * grad / n` is written once, chunk by chunk,
  into one (N, V) result.
- reuse_logits=True (the training step, whose caller never reads the logits): the forward writes
  that gradient over the logits while each chunk is in cache, and the backward only scales it.
  No (N, V) buffer is allocated and the logits are read once.
- low-precision logits (bf16 under autocast) are upcast per chunk, never as a full fp32 copy;
  the gradient has the logits' dtype.
- fp16 logits never take the in-place path. Their gradient entries are about
  1 / (rows x vocabulary), below fp16's smallest number, so they must be multiplied by the loss
  scale (GradScaler's, 2^16 at first) before they are rounded to fp16, and the scale is known
  only in the backward. The backward multiplies in fp32 and rounds once: the scale itself would
  be inf in fp16 (its largest number is 65504).
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


def _grad_rows(probs: torch.Tensor, safe: torch.Tensor, row_scale: torch.Tensor) -> torch.Tensor:
    """softmax rows (rows, V) fp32 -> (probs - onehot(target)) * row_scale, in place."""
    probs.scatter_add_(1, safe, torch.full_like(probs[:, :1], -1.0))
    return probs.mul_(row_scale)


def _is_one(t: torch.Tensor) -> bool:
    """Whether a 0-d tensor is exactly 1 (an unscaled training loss), where checking is free:
    on CPU outside torch.compile. Elsewhere False, which costs a multiply, not a sync."""
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return t.item() == 1.0


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                ignore_index: int, grad_in_place: bool) -> torch.Tensor:
        N, step = logits.shape[0], chunk_rows(logits)
        valid = targets != ignore_index  # (N,)
        safe = torch.where(valid, targets, 0)[:, None]  # (N, 1); ignored rows read column 0
        count = valid.sum()
        # d loss / d logits of row i is (softmax_i - onehot_i) * row_scale_i (0 when ignored).
        row_scale = (valid / count).to(torch.float32)[:, None]  # (N, 1)
        picked = torch.empty(N, dtype=torch.float32, device=logits.device)  # log p(target)
        temp = torch.empty(min(step, N), logits.shape[1], dtype=torch.float32,
                           device=logits.device)  # (rows, V), reused by every chunk
        for start in range(0, N, step):
            rows = slice(start, start + step)
            chunk = logits[rows]
            logp = torch.log_softmax(chunk, dim=-1, dtype=torch.float32,
                                     out=temp[: chunk.shape[0]])
            picked[rows] = logp.gather(1, safe[rows]).squeeze(1)
            if grad_in_place:
                chunk.copy_(_grad_rows(logp.exp_(), safe[rows], row_scale[rows]))
        # PyTorch's own reduction over the picked column (same summation order, same nan when
        # every target is ignored), so the value matches F.cross_entropy bit for bit.
        loss = F.nll_loss(picked[:, None], torch.where(valid, 0, ignore_index),
                          ignore_index=ignore_index)
        ctx.grad_in_place = grad_in_place
        ctx.save_for_backward(logits, safe, row_scale)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        logits, safe, row_scale = ctx.saved_tensors
        if ctx.grad_in_place:  # the forward left the gradient for grad_loss == 1 in `logits`
            if not _is_one(grad_loss):
                logits.mul_(grad_loss)  # in fp32, rounded once to the logits' dtype
            return logits, None, None, None
        N, step = logits.shape[0], chunk_rows(logits)
        row_scale = row_scale * grad_loss.to(torch.float32)
        grad = torch.empty_like(logits)  # (N, V) in the logits' dtype
        direct = grad.dtype == torch.float32  # else: an fp32 temp per chunk, then cast
        for start in range(0, N, step):
            rows = slice(start, start + step)
            probs = torch.softmax(logits[rows], dim=-1, dtype=torch.float32,
                                  out=grad[rows] if direct else None)  # (rows, V)
            _grad_rows(probs, safe[rows], row_scale[rows])
            if not direct:
                grad[rows].copy_(probs)
        return grad, None, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1, *,
                  reuse_logits: bool = False) -> torch.Tensor:
    """Mean of -log softmax(logits)[target] over rows whose target is not `ignore_index`.

    logits: (N, V) any float dtype; targets: (N,) int64. Returns a 0-d fp32 tensor.
    reuse_logits: when a backward will follow, overwrite `logits` with their gradient in the
    forward (the caller must not read them afterwards); saves an (N, V) buffer and a pass.
    Ignored for fp16 logits, whose gradient is only representable once the loss scale is in.
    """
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"cross_entropy expects logits (N, V) and targets (N,), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    in_place = (reuse_logits and logits.requires_grad and torch.is_grad_enabled()
                and logits.dtype != torch.float16)  # fp16: scale first (module docstring)
    return _ChunkedCrossEntropy.apply(logits, targets, ignore_index, in_place)
