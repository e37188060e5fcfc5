"""Learning-rate schedule, AdamW parameter groups and the MFU formula."""

from __future__ import annotations

import math

import pytest
import torch

from nanollm.config import ModelConfig, TrainingConfig
from nanollm.model import GPT
from trainer.lr_schedule import LRSchedule
from trainer.mfu import flops_per_token, mfu, peak_flops
from trainer.optimizer import configure_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_lr_warmup_and_decay_boundaries() -> None:
    s = LRSchedule(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110)
    assert s(0) == pytest.approx(1e-3 * 1 / 11)  # first step already moves
    assert s(9) == pytest.approx(1e-3 * 10 / 11)  # last warmup step, just below the peak
    assert s(10) == pytest.approx(1e-3)  # decay starts at the peak
    assert s(60) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half way: cosine = 0
    assert 1e-4 < s(109) < 1.01e-4  # almost there
    assert s(110) == 1e-4 and s(10_000) == 1e-4  # then flat at min_lr
    assert all(s(i) >= s(i + 1) for i in range(10, 200))  # monotone after warmup


def test_lr_defaults_and_degenerate_cases() -> None:
    cfg = TrainingConfig(max_iters=500, warmup_iters=100, learning_rate=6e-4, min_lr=6e-5)
    assert LRSchedule.from_config(cfg).lr_decay_iters == 500  # defaults to max_iters
    assert LRSchedule.from_config(cfg.replace(decay_lr=False))(300) == 6e-4
    # decay ending where warmup ends: no division by zero, straight to min_lr
    s = LRSchedule(learning_rate=1.0, min_lr=0.1, warmup_iters=5, lr_decay_iters=5)
    assert s(4) == pytest.approx(5 / 6) and s(5) == 0.1


def test_weight_decay_groups() -> None:
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=64))
    opt = configure_optimizer(model, learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                              device=torch.device("cpu"))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])  # biases and LayerNorm gains
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters())  # tied weight counted once
    assert opt.defaults["fused"] is True  # torch >= 2.4 has a fused CPU kernel


def test_flops_per_token_formula() -> None:
    cfg = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304)
    with torch.device("meta"):
        model = GPT(cfg)
    n = model.get_num_params()  # 6N + 12 L H Q T (PaLM / nanoGPT)
    assert flops_per_token(model) == 6 * n + 12 * 12 * 12 * 64 * 1024
    # nanoGPT's reference point: GPT-2 124M at batch 12 x 1024 on an A100 bf16
    per_iter = flops_per_token(model) * 12 * 1024
    assert 0.0 < mfu(per_iter / 1024 / 12, 12 * 1024 / 1.0, 312e12) < 1.0
    assert math.isclose(peak_flops(torch.device("cpu"), torch.float32, threads=2), 1.8e11)
    assert math.isclose(peak_flops(torch.device("cpu"), torch.bfloat16, threads=1), 2e11)
