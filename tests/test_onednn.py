"""The oneDNN fast path for inference Linear layers: used where it should be, logged when not."""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Iterator

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from nanollm import onednn
from nanollm.config import ModelConfig
from nanollm.model import GPT, Linear

# The build CI and this project's users on x86-64 Linux install: the CPU wheel, which ships
# oneDNN with both ops. If a torch upgrade drops or renames them, these tests fail instead of
# decoding silently getting twice as slow.
X86_LINUX_CPU_TORCH = (sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
                       and torch.version.cuda is None)
needs_x86_cpu_torch = pytest.mark.skipif(
    not X86_LINUX_CPU_TORCH, reason="the fast path is promised on x86-64 Linux CPU torch")


def prepared_model(pack_weights: bool = True) -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=101,
                         dropout=0.0, tokenizer="byte")
    return GPT(config).prepare_for_inference(pack_weights=pack_weights)


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """Forget the once-per-process probe before and after the test."""
    onednn._ops_work.cache_clear()
    yield
    onednn._ops_work.cache_clear()


@needs_x86_cpu_torch
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_is_available_on_x86_cpu_torch(dtype: torch.dtype) -> None:
    assert onednn.available(torch.device("cpu"), dtype)


@needs_x86_cpu_torch
def test_prepared_model_packs_every_linear_and_decodes_through_onednn() -> None:
    model = prepared_model()
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert len(linears) == 2 * 4 + 1
    assert all(m.onednn and m.packed_weight is not None for m in linears)
    assert model.inference_packed
    idx = torch.randint(0, 101, (2, 5))
    cache = model.new_cache(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.forward_cached(idx, cache)  # prefill: 2 rows of 5
        model.forward_cached(idx[:, :1], cache)  # one decode step
    ops = {e.key for e in prof.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops
    assert not ops & {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul"}


@pytest.mark.parametrize("device, dtype", [
    ("cpu", torch.float16),  # oneDNN does not serve fp16 here
    ("meta", torch.float32),  # stands in for any non-CPU device
])
def test_onednn_is_not_offered_where_it_never_runs(device: str, dtype: torch.dtype,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nanollm.onednn"):
        assert not onednn.available(torch.device(device), dtype)
    assert caplog.records == []


def test_a_missing_op_is_logged_once_and_decoding_falls_back(
        fresh_probe: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # A torch build without one of the ops, as a future release may be.
    monkeypatch.setattr(onednn, "_OPS", ("_reorder_linear_weight", "_linear_pointwise_v2"))
    with caplog.at_level(logging.WARNING, logger="nanollm.onednn"):
        model = prepared_model()
        prepared_model()
        idx = torch.randint(0, 101, (1, 4))
        logits = model.forward_cached(idx, model.new_cache(1))
    assert [r.getMessage() for r in caplog.records] == [
        f"torch {torch.__version__} lacks torch.ops.mkldnn._linear_pointwise_v2; "
        "CPU inference uses F.linear instead (about 2x slower decoding)"]
    assert not model.inference_packed
    with torch.no_grad():
        expected, _ = model(idx)
    torch.testing.assert_close(logits, expected[:, -1], atol=1e-5, rtol=0)


def test_turning_onednn_off_is_respected_without_a_warning(
        fresh_probe: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with caplog.at_level(logging.WARNING, logger="nanollm.onednn"):
        model = prepared_model()
    assert not model.lm_head.onednn and not model.inference_packed
    assert caplog.records == []
