"""nanollm.cross_entropy gives F.cross_entropy's value and gradient without (N, V) temporaries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanollm.config import ModelConfig
from nanollm.cross_entropy import cross_entropy
from nanollm.model import GPT


def reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    loss = F.cross_entropy(x.float(), targets, ignore_index=-1)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, v", [(5, 7), (70, 50257)])  # one chunk; several chunks
def test_matches_pytorch(dtype: torch.dtype, n: int, v: int) -> None:
    torch.manual_seed(0)
    logits = (3 * torch.randn(n, v)).to(dtype)
    targets = torch.randint(0, v, (n,))
    targets[::3] = -1  # ignored rows
    ref_loss, ref_grad = reference(logits, targets)
    x = logits.detach().clone().requires_grad_()
    loss = cross_entropy(x, targets)
    (2.5 * loss).backward()
    assert loss.dtype == torch.float32
    assert torch.equal(loss.detach(), ref_loss)  # the same reduction: bit for bit
    assert x.grad.dtype == dtype
    assert torch.allclose(x.grad.float(), 2.5 * ref_grad.float(), rtol=1e-2 if dtype ==
                          torch.bfloat16 else 1e-5, atol=1e-9)
    assert torch.all(x.grad[targets == -1] == 0)


def test_all_ignored_is_nan_like_pytorch() -> None:
    logits = torch.randn(4, 10)
    targets = torch.full((4,), -1)
    assert torch.isnan(cross_entropy(logits, targets))
    assert torch.isnan(F.cross_entropy(logits, targets, ignore_index=-1))


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"logits \(N, V\) and targets \(N,\)"):
        cross_entropy(torch.randn(2, 3, 5), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))


def test_model_training_loss_is_pytorch_cross_entropy_of_its_logits() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=300))
    idx = torch.randint(0, 300, (2, 8))
    targets = torch.randint(0, 300, (2, 8))
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits.view(-1, 300), targets.view(-1), ignore_index=-1)
    assert torch.equal(loss, expected)
    loss.backward()
    assert model.lm_head.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reuse_logits_gives_the_same_loss_and_gradient(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    logits = (3 * torch.randn(70, 50257)).to(dtype)
    targets = torch.randint(0, 50257, (70,))
    targets[::4] = -1
    ref_loss, ref_grad = reference(logits, targets)
    leaf = logits.detach().clone().requires_grad_()
    x = leaf * 1  # a non-leaf, like the lm_head's output
    loss = cross_entropy(x, targets, reuse_logits=True)
    (0.5 * loss).backward()
    assert torch.equal(loss.detach(), ref_loss)
    assert torch.allclose(leaf.grad.float(), 0.5 * ref_grad.float(), rtol=1e-2 if dtype ==
                          torch.bfloat16 else 1e-5, atol=1e-9)


def test_reuse_logits_leaves_logits_alone_without_backward() -> None:
    logits = torch.randn(6, 11)
    before = logits.clone()
    with torch.no_grad():
        cross_entropy(logits, torch.randint(0, 11, (6,)), reuse_logits=True)
    assert torch.equal(logits, before)


def test_model_without_logits_trains_identically() -> None:
    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=300)
    a, b = GPT(config), GPT(config)
    b.load_state_dict(a.state_dict())
    idx, targets = torch.randint(0, 300, (2, 8)), torch.randint(0, 300, (2, 8))
    _, loss_a = a(idx, targets)
    logits_b, loss_b = b(idx, targets, return_logits=False)
    assert logits_b is None and torch.equal(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("reuse_logits", [False, True])
def test_fp16_gradient_is_scaled_before_it_is_rounded(reuse_logits: bool) -> None:
    # fp16 training emulated on CPU: 4096 rows put each gradient entry near 1 / (4096 x 2048),
    # under fp16's smallest number; only the loss scale (GradScaler's) makes them representable.
    torch.manual_seed(0)
    n, v, scale = 4096, 2048, 2.0**15
    logits = (2 * torch.randn(n, v)).half()
    targets = torch.randint(0, v, (n,))
    _, ref_grad = reference(logits.float(), targets)
    want = (ref_grad * scale).half()  # the exact scaled gradient, rounded once to fp16
    x = logits.clone().requires_grad_()
    (cross_entropy(x, targets, reuse_logits=reuse_logits) * scale).backward()
    assert x.grad.dtype == torch.float16
    assert (x.grad == 0).sum().item() == (want == 0).sum().item() < n * v // 10**5
    assert torch.allclose(x.grad.float(), want.float(), rtol=2e-3, atol=2e-4)


def test_fp16_first_step_is_not_skipped_by_grad_scaler() -> None:
    # GradScaler starts at 2^16, which is inf in fp16: the step must still see finite gradients.
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=300))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    idx = torch.randint(0, 300, (4, 16))
    with torch.autocast("cpu", dtype=torch.float16):
        _, loss = model(idx, idx, return_logits=False)  # the training step's call
    scaler.scale(loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**16  # halved only after a step skipped for inf/nan
