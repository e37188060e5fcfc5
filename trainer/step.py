"""One optimizer step: forward/backward over this rank's micro-batches, then clip and update.

    loss_sum = accumulate_gradients(model, micro_batches, precision)   # gradients summed
    grad_norm = optimizer_step(model, optimizer, precision, grad_clip)  # pre-clip norm

Each micro-batch loss is divided by the number of local micro-batches; DDP then averages over
ranks, so the gradient is the mean over the whole global batch whatever the rank count.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainer.distributed import is_fsdp, maybe_no_sync
from trainer.precision import Precision


def accumulate_gradients(
    model: nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    precision: Precision,
) -> torch.Tensor:
    """Backward over all micro-batches (x, y: (B, T)); returns the sum of their mean losses
    as a detached 0-d tensor (no host sync)."""
    n = len(micro_batches)
    total = torch.zeros((), device=precision.device)
    for i, (x, y) in enumerate(micro_batches):
        # Gradients are all-reduced only once, on the last micro-batch.
        with maybe_no_sync(model, sync=i == n - 1):
            with precision.autocast():
                # No logits back: the loss reuses their memory for its gradient (faster on CPU).
                _, loss = model(x, y, return_logits=False)
            precision.scaler.scale(loss / n).backward()
        total += loss.detach().float()
    return total


def grad_norm_and_clip(model: nn.Module, grad_clip: float) -> torch.Tensor:
    """Global L2 norm of the gradients before clipping; clips in place when grad_clip > 0."""
    max_norm = grad_clip if grad_clip > 0 else math.inf
    if is_fsdp(model):  # each rank holds a shard: FSDP's own method reduces across ranks
        return model.clip_grad_norm_(max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    grad_clip: float,
) -> torch.Tensor:
    """Unscale, clip, update, zero the gradients. Returns the pre-clip gradient norm (0-d).

    The norm is computed before zero_grad, from the unscaled gradients, so logs show the real
    size of the gradient even when clipping changed it (or the fp16 step was skipped).
    """
    scaler = precision.scaler
    scaler.unscale_(optimizer)  # a no-op when the scaler is disabled
    norm = grad_norm_and_clip(model, grad_clip).detach()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return norm


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
