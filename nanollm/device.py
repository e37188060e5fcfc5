"""Device and dtype choice: 'auto' means CUDA with bf16 when present, else CPU with fp32."""

from __future__ import annotations

import os
import re

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_CHOICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device, failing clearly when CUDA is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Checked here rather than by torch.device(), whose error lists every backend torch knows
    # (tpu, mps, xla, ...), most of which nanoLLM never runs on.
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}; choose {DEVICE_CHOICES}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but CUDA is not available; use "
                             "'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} was asked for but this machine has {count} CUDA "
                             f"device(s): cuda:0 to cuda:{count - 1}")
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


def check_threads(requested: int, what: str = "threads") -> int:
    """`requested` when it is a usable torch thread count: 1 to the number of CPUs.

    More threads than CPUs only slow torch down, and huge counts crash it outright
    (torch.set_num_threads(100000) is a segfault), so they are refused here.
    """
    cpus = os.cpu_count() or 1
    if not 1 <= requested <= cpus:
        raise ValueError(f"{what} must be between 1 and {cpus} (the CPUs on this machine), "
                         f"got {requested}")
    return requested


def inference_threads(num_params: int, requested: int | None = None) -> int:
    """Torch CPU threads for decoding a model of `num_params`: `requested` (see check_threads),
    or 1 for small models and every core torch would use otherwise."""
    if requested is not None:
        return check_threads(requested)
    return 1 if num_params < SMALL_MODEL_PARAMS else torch.get_num_threads()
