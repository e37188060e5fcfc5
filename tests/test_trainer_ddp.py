"""DDP on CPU (gloo): two ranks give the same loss curve as one process with the same global
batch (1 process x accumulation 2 == 2 ranks x accumulation 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import train
from trainer.events import read_events

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _curve(out_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(out_dir) if e["type"] == "step"}


def test_two_gloo_ranks_match_one_process(tiny_train_config, tmp_path: Path) -> None:
    cfg = tiny_train_config(out_dir=str(tmp_path / "single"), max_iters=6, eval_interval=3,
                            gradient_accumulation_steps=2, model={"dropout": 0.0})
    single = train(cfg)
    out = tmp_path / "ddp"
    m = cfg.model
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "trainer.cli", "--data-path", str(cfg.data_path), "--out-dir", str(out),
        "--n-layer", str(m.n_layer), "--n-head", str(m.n_head), "--n-embd", str(m.n_embd),
        "--block-size", str(m.block_size), "--tokenizer", "byte", "--dropout", "0.0",
        "--batch-size", str(cfg.batch_size), "--gradient-accumulation-steps", "2",
        "--max-iters", "6", "--eval-interval", "3", "--eval-iters", str(cfg.eval_iters),
        "--log-interval", "1", "--warmup-iters", str(cfg.warmup_iters),
        "--learning-rate", str(cfg.learning_rate), "--min-lr", str(cfg.min_lr),
        "--seed", str(cfg.seed), "--device", "cpu", "--dtype", "float32", "--no-progress",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    start = read_events(out)[0]
    assert start["world_size"] == 2 and start["threads"] >= 1
    want, got = _curve(Path(cfg.out_dir)), _curve(out)
    assert sorted(got) == list(range(1, 7))
    for step in want:
        assert abs(want[step] - got[step]) < 1e-4, (step, want[step], got[step])
    evals = [e["val_loss"] for e in read_events(out) if e["type"] == "eval"]
    assert abs(evals[-1] - single.last_val_loss) < 1e-4
    # only rank 0 wrote: one start event, one log
    assert sum(e["type"] == "start" for e in read_events(out)) == 1
