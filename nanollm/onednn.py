"""oneDNN's CPU matmul for inference Linear layers, through torch's private mkldnn ops.

torch.compile lowers CPU linears to `torch.ops.mkldnn._linear_pointwise`, optionally on a weight
reordered once by `torch.ops.mkldnn._reorder_linear_weight` into oneDNN's blocked layout. Both
are private: a torch release may rename or drop them. Everything that touches them lives here,
and `available()` tries them once on a small matrix, so a missing or changed op means F.linear
(slower, same numbers to rounding) and one logged warning, never a failure at decode time.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_OPS = ("_reorder_linear_weight", "_linear_pointwise")


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether Linear layers on `device` in `dtype` can run through oneDNN here.

    False without a warning for what oneDNN never serves (GPU tensors, fp16) or when the user
    turned it off (`torch.backends.mkldnn.enabled = False`); False with one warning per process
    when a CPU build that should have the ops lacks them or they fail.
    """
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    if not torch.backends.mkldnn.enabled:
        return False
    return _ops_work()


@functools.cache
def _ops_work() -> bool:
    # Cached: the probe and its warning happen once per process, not once per layer or call.
    if not torch.backends.mkldnn.is_available():
        return _fall_back("this torch build has no oneDNN (mkldnn) support")
    missing = [name for name in _OPS if not hasattr(torch.ops.mkldnn, name)]
    if missing:
        return _fall_back(f"torch {torch.__version__} lacks torch.ops.mkldnn.{missing[0]}")
    weight, x = torch.randn(6, 4), torch.randn(3, 4)  # (out, in), (rows, in)
    try:
        y = linear(x, pack_weight(weight, rows_hint=8), None, gelu=False)
    except (RuntimeError, TypeError) as e:
        return _fall_back(f"torch.ops.mkldnn.{_OPS[1]} failed: {str(e).splitlines()[0]}")
    if not torch.allclose(y, F.linear(x, weight), atol=1e-5):
        return _fall_back(f"torch.ops.mkldnn.{_OPS[1]} gives wrong results")
    return True


def _fall_back(reason: str) -> bool:
    log.warning("%s; CPU inference uses F.linear instead (about 2x slower decoding)", reason)
    return False


def pack_weight(weight: torch.Tensor, rows_hint: int) -> torch.Tensor:
    """A copy of a Linear weight (out, in) in oneDNN's blocked layout, tuned for about
    `rows_hint` input rows. Opaque: only `linear()` can use it; it cannot be copied or pickled."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           gelu: bool) -> torch.Tensor:
    """x: (..., in) @ weight (out, in) or its packed copy -> (..., out), plus bias, then GPT-2's
    tanh GELU when `gelu` (fused into the matmul). No autograd."""
    b = None if bias is None else bias.detach()
    return torch.ops.mkldnn._linear_pointwise(
        x, weight.detach(), b, "gelu" if gelu else "none", [], "tanh" if gelu else "")
