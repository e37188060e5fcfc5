"""AdamW with two parameter groups: matrices decay, biases and LayerNorm gains do not.

Weight decay on 2-D tensors only (Linear weights, embeddings) is the GPT-2/nanoGPT recipe; a
decayed LayerNorm gain or bias just pulls the model towards zero without regularising it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# Name fragments that wrappers insert (FSDP, activation checkpointing, torch.compile, DDP).
_WRAPPER_FRAGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.",
                      "module.")


def clean_name(name: str) -> str:
    """`module._orig_mod.transformer.h.0...` -> `transformer.h.0...`."""
    for fragment in _WRAPPER_FRAGMENTS:
        name = name.replace(fragment, "")
    return name


def decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters to decay: every tensor with 2 or more dimensions.

    Read from the unwrapped model: FSDP's sharded views are 1-D, so the rule must be decided first.
    """
    return {clean_name(n) for n, p in model.named_parameters() if p.dim() >= 2}


def fused_supported(device: torch.device) -> bool:
    """Whether torch has a fused AdamW kernel for this device type (CUDA; CPU since torch 2.4)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # older torch: only CUDA had fused kernels
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def configure_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    device: torch.device,
    decay: set[str] | None = None,
) -> torch.optim.AdamW:
    """AdamW over `model` (possibly wrapped); `decay` names the decayed parameters (default:
    decided on `model` itself)."""
    decay = decay_names(model) if decay is None else decay
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        (decayed if clean_name(name) in decay else plain).append(p)
    groups = [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas,
                             fused=fused_supported(device) or None)
