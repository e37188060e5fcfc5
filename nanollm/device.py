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


# Below this many parameters a decode step is a few small matmuls: extra threads only add
# synchronisation, and when another process is busy, spinning threads can make it 10-50x slower.
SMALL_MODEL_PARAMS = 20_000_000


def inference_threads(num_params: int, requested: int | None = None) -> int:
    """Torch CPU threads for decoding a model of `num_params`: `requested`, or 1 for small
    models and every core torch would use otherwise."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    return 1 if num_params < SMALL_MODEL_PARAMS else torch.get_num_threads()
