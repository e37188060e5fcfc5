"""Smoke test of bench/serve.py: a tiny model served by a real gpt-server process, loaded over
gRPC with Poisson arrivals, against the pipeline and transformers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "serve.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bench_serve_quick_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    out = tmp_path / "serve.json"
    summary = bench.main(["--quick", "--threads", "1", "--request-rate", "50", "--json",
                          str(out)])
    assert json.loads(out.read_text()) == summary
    assert (summary["requests"], summary["output_tokens"]) == (8, 8 * 16)
    assert summary["request_rate"] == 50 and summary["concurrency"] == 4
    assert summary["greedy_mismatches"] == 0  # the server returns the pipeline's tokens
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        stats = summary[name]
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"]
    assert summary["ttft_ms"]["p99"] <= summary["e2e_ms"]["p99"]
    for name in ("ratio_concurrency", "ratio_transformers", "ratio_grpc_over_pipeline"):
        assert summary[name] > 0
    assert summary["ratio_concurrency"] == pytest.approx(
        summary["token_throughput"] / summary["one_at_a_time_grpc"])
    printed = capsys.readouterr().out
    assert "arrivals Poisson 50/s" in printed
    assert "greedy tokens, server vs pipeline: OK" in printed
    assert "threads=1 (server and here)" in printed


@pytest.mark.parametrize("flag", ["--concurrency", "--new-tokens", "--rounds"])
def test_bench_serve_refuses_counts_below_one(flag: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit) as caught:
        bench.parse_args([flag, "0"])
    assert caught.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
