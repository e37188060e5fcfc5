"""pyproject.toml's torch floor is a release that has every torch API the code calls."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Torch APIs newer than torch 2.0 that nanollm/ or trainer/ call, with the first release that has
# them. Add a row when the code starts calling a newer API.
NEWER_APIS = {
    "torch.nn.utils.get_total_norm": (2, 6),
    "torch.compiler.is_compiling": (2, 3),
    "torch.amp.GradScaler": (2, 3),
    "torch.distributed.checkpoint.state_dict": (2, 2),
}


def torch_floor() -> tuple[int, int]:
    # A regex, not tomllib: the tests also run on Python 3.10.
    [spec] = re.findall(r'^\s*"(torch\b[^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    m = re.fullmatch(r"torch>=(\d+)\.(\d+)(\.\d+)?(,<[\d.]+)?", spec.replace(" ", ""))
    assert m, f"unexpected torch requirement {spec!r}"
    return int(m[1]), int(m[2])


def code() -> str:
    return "\n".join(p.read_text() for d in ("nanollm", "trainer")
                     for p in (ROOT / d).rglob("*.py"))


def test_torch_floor_has_every_api_the_code_calls() -> None:
    source = code()
    used = {api: since for api, since in NEWER_APIS.items() if api in source}
    assert "torch.nn.utils.get_total_norm" in used  # the table still describes this code
    floor = torch_floor()
    too_new = {api: since for api, since in used.items() if since > floor}
    assert too_new == {}, f"pyproject's torch>={floor} lacks these: {too_new}"
