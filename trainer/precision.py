"""Mixed precision: an autocast context and a gradient scaler for the chosen compute dtype.

Parameters and optimizer state stay fp32; autocast runs matmuls in bf16/fp16. fp16 needs loss
scaling (GradScaler) to keep small gradients from flushing to zero, and only CUDA has it here; bf16
has fp32's exponent range and needs none. `dtype: auto` is bf16 on a CUDA GPU that supports it and
fp32 otherwise, so CPU runs are exact and reproducible by default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from nanollm.config import ConfigError
from nanollm.device import resolve_dtype


@dataclass
class Precision:
    dtype: torch.dtype
    device: torch.device
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, dtype_name: str, device: torch.device) -> Precision:
        dtype = resolve_dtype(dtype_name, device)
        if dtype == torch.float16 and device.type != "cuda":
            raise ConfigError("TrainingConfig.dtype = 'float16' needs CUDA (loss scaling); on "
                              "CPU use 'bfloat16' or 'float32'")
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        return cls(dtype, device, scaler)

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
