"""Smoke test of bench/engine.py: every measurement runs on a tiny model and reports a ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_engine_runs_every_measurement(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # engine.py imports its helpers from decode.py
    sys.modules.pop("engine", None)
    import engine

    results = engine.main(["--tiny", "--threads", "1", "--rounds", "1", "--requests", "4",
                           "--new-tokens", "8", "--hf-requests", "1", "--rate", "50"])
    assert set(results) == {"admission_ratio", "sparse_step_ratio", "throughput_ratio",
                            "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms"}
    out = capsys.readouterr().out
    for line in ("admission:", "sparse step:", "throughput:", "staggered:"):
        assert line in out
