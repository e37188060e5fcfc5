"""Smoke test of bench/train.py: both loops run a tiny model and train the same thing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_bench_train_runs_both_sides_on_the_same_run(tmp_path: Path, capsys) -> None:
    bench = load_bench()
    summary = bench.main(["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size",
                          "32", "--batch-size", "2", "--warmup", "1", "--steps", "1",
                          "--rounds", "2", "--threads", "1", "--data-dir", str(tmp_path),
                          "--json", str(tmp_path / "train.json")])
    ours, hf = summary["results"]["ours"], summary["results"]["transformers"]
    for side in (ours, hf):
        assert side["timed_steps"] == 2  # 1 per round
        assert side["tokens_per_sec"] > 0 and 0 < side["mfu"] < 1
    # Same start weights and batches: the first loss agrees, and both runs learn alike.
    assert ours["first_loss"] == pytest.approx(hf["first_loss"], abs=1e-4)
    assert ours["last_loss"] == pytest.approx(hf["last_loss"], abs=1e-3)
    assert summary["ratio"] == pytest.approx(ours["tokens_per_sec"] / hf["tokens_per_sec"])
    assert (tmp_path / "train.json").is_file()
    out = capsys.readouterr().out
    assert "ours / transformers:" in out and "1 thread(s)" in out


def test_bench_train_rejects_bad_flags() -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--n-embd", "30", "--n-head", "4"])
