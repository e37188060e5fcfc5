"""Smoke test of bench/gateway.py: a tiny model behind a real gpt-server process (gRPC and its
built-in gateway), the same load through REST/SSE and over gRPC."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gateway.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gateway", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bench_gateway_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    out = tmp_path / "gateway.json"
    summary = bench.main(["--tiny", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == summary
    # Both paths did the same work: 4 requests of exactly 16 tokens each.
    assert summary["output_tokens_rest"] == summary["output_tokens_grpc"] == 4 * 16
    assert (summary["concurrency"], summary["rounds"], summary["threads"]) == (2, 1, 1)
    assert summary["throughput_rest"] > 0 and summary["throughput_grpc"] > 0
    assert summary["throughput_ratio"] == pytest.approx(
        summary["throughput_rest"] / summary["throughput_grpc"])
    assert summary["ttft_added_ms"] == pytest.approx(
        summary["ttft_ms_rest"] - summary["ttft_ms_grpc"])
    printed = capsys.readouterr().out
    assert "threads=1 (server)" in printed
    assert "REST / gRPC:" in printed and "(target >= 0.90:" in printed
    assert "added by REST" in printed and "(target <= 5 ms:" in printed
    assert "tokens generated: REST 64, gRPC 64 (same work)" in printed


@pytest.mark.parametrize("flag", ["--concurrency", "--new-tokens", "--rounds", "--ttft-requests"])
def test_bench_gateway_refuses_counts_below_one(flag: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit) as caught:
        bench.parse_args([flag, "0"])
    assert caught.value.code == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
