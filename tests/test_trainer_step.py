"""The optimizer step itself: initial loss, gradient accumulation, clipping, overfitting."""

from __future__ import annotations

import math

import pytest
import torch

from nanollm.config import ModelConfig
from nanollm.model import GPT
from trainer.optimizer import configure_optimizer
from trainer.precision import Precision
from trainer.step import accumulate_gradients, optimizer_step

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(vocab: int = 257, dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=vocab,
                           dropout=dropout))


def _batch(b: int, t: int = 16, vocab: int = 257, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(vocab, (b, t + 1), generator=g)
    return xy[:, :-1], xy[:, 1:]


def test_initial_loss_is_close_to_uniform() -> None:
    model = _model()
    x, y = _batch(8)
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(257)) < 0.1  # small init: near-uniform predictions


def test_gradient_accumulation_matches_one_big_batch() -> None:
    x, y = _batch(8)
    fp32 = Precision.create("float32", CPU)
    grads = []
    for k in (1, 2, 4):
        model = _model()
        micro = list(zip(x.chunk(k), y.chunk(k), strict=True))  # k micro-batches of 8 / k
        loss_sum = accumulate_gradients(model, micro, fp32)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        assert math.isclose(loss_sum.item() / k, model(x, y)[1].item(), rel_tol=1e-5)
    for other in grads[1:]:
        for name, g in grads[0].items():
            torch.testing.assert_close(other[name], g, rtol=1e-5, atol=1e-7)


def test_grad_norm_is_read_before_clipping() -> None:
    model = _model()
    opt = configure_optimizer(model, learning_rate=0.0, weight_decay=0.0, betas=(0.9, 0.95),
                              device=CPU)
    fp32 = Precision.create("float32", CPU)
    accumulate_gradients(model, [_batch(4)], fp32)
    true_norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    norm = optimizer_step(model, opt, fp32, grad_clip=1e-3)
    assert math.isclose(norm.item(), true_norm, rel_tol=1e-5) and true_norm > 1e-3
    assert all(p.grad is None for p in model.parameters())  # zeroed after the step


def test_overfits_one_batch() -> None:
    model = _model()
    opt = configure_optimizer(model, learning_rate=1e-2, weight_decay=0.0, betas=(0.9, 0.95),
                              device=CPU)
    fp32 = Precision.create("float32", CPU)
    batch = _batch(4)
    for _ in range(60):
        loss = accumulate_gradients(model, [batch], fp32)
        optimizer_step(model, opt, fp32, grad_clip=1.0)
    assert loss.item() < 0.1


def test_bf16_autocast_step_runs_on_cpu() -> None:
    model = _model()
    bf16 = Precision.create("bfloat16", CPU)
    loss = accumulate_gradients(model, [_batch(2)], bf16)
    assert math.isfinite(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
