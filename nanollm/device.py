"""Device and dtype choice: 'auto' means CUDA with bf16 when present, else CPU with fp32."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, failing clearly when CUDA is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)  # raises RuntimeError on a malformed name
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; use 'cpu' "
                         "or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on a CUDA device that supports it, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(_DTYPES)}") from None
