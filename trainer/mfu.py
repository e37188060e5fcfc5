"""Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak.

FLOPs per token (PaLM appendix B, as in nanoGPT's `estimate_mfu`):

    flops_per_token = 6 * N + 12 * L * H * Q * T

N: parameters without the position embedding (`GPT.get_num_params()`), L: layers, H: heads,
Q: head size, T: sequence length. 6N counts the forward (2N) and backward (4N) matmuls; the second
term the attention scores and weighted sums. MFU = flops_per_token * tokens/s / (peak * devices).

Peaks are dense (no sparsity) per device. GPUs: vendor data sheets, bf16/fp16 tensor cores for
mixed precision and TF32 for fp32. CPU: per thread 9e10 FLOP/s in fp32 and 2e11 in bf16, the
1024x1024 matmul rates measured with one thread on the AMD Zen 4 (AVX-512 BF16) reference machine
(docs/training.md); give `peak_flops` for other hardware.
"""

from __future__ import annotations

import torch

from nanollm.model import GPT

CPU_PEAK_FLOPS_PER_THREAD = {torch.float32: 9e10, torch.bfloat16: 2e11}

# (substring of torch.cuda.get_device_name, bf16/fp16 dense peak, tf32 dense peak). First match
# wins, so the more specific names come first.
GPU_PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989e12, 494e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494e12),
    ("GH200", 989e12, 494e12),
    ("B200", 2250e12, 1100e12),
    ("A100", 312e12, 156e12),
    ("A800", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L40", 181e12, 90.5e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("RTX 4090", 165e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12),
    ("V100", 125e12, 15.7e12),  # fp16 tensor cores; no bf16, no tf32 (fp32 peak)
    ("T4", 65e12, 8.1e12),
)


def flops_per_token(model: GPT, seq_len: int | None = None) -> float:
    """6N + 12 L H Q T for one token of a sequence of `seq_len` (default block_size)."""
    cfg = model.config
    T = seq_len or cfg.block_size
    N = model.get_num_params()
    return 6 * N + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T


def peak_flops(device: torch.device, dtype: torch.dtype,
               threads: int | None = None) -> float | None:
    """Peak FLOP/s of one device; None for a GPU not in the table (give `peak_flops`)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, half, tf32 in GPU_PEAK_FLOPS:
            if fragment in name:
                return half if dtype in (torch.bfloat16, torch.float16) else tf32
        return None
    per_thread = CPU_PEAK_FLOPS_PER_THREAD.get(dtype, CPU_PEAK_FLOPS_PER_THREAD[torch.float32])
    return per_thread * (threads or torch.get_num_threads())


def mfu(flops_token: float, tokens_per_sec: float, peak: float, num_devices: int = 1) -> float:
    """Fraction (0..1) of the devices' combined peak that training achieved."""
    return flops_token * tokens_per_sec / (peak * num_devices)
