"""The console: a run survives it going away and stops cleanly on Ctrl-C and SIGTERM (exit code 0,
latest/ saved at the step reached) in one process and under torchrun (through trainer.launch);
the progress bar is drawn only on a terminal."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.events import read_events
from trainer.progress import ProgressBar

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _flags(data: Path, out: Path, max_iters: int) -> list[str]:
    return ["--data-path", str(data), "--out-dir", str(out), "--n-layer", "1", "--n-head", "2",
            "--n-embd", "32", "--block-size", "32", "--batch-size", "2", "--device", "cpu",
            "--dtype", "float32", "--eval-iters", "1", "--num-threads", "1", "--log-interval",
            "1", "--max-iters", str(max_iters), "--eval-interval", str(max_iters)]


def _saved_step(out: Path) -> int:
    return int(torch.load(out / "latest" / "trainer_state.pt", weights_only=True)["step"])


def _wait_for_steps(proc: subprocess.Popen[str], out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # events are flushed per line: tail them
        if (out / "events.jsonl").exists() and any(e["type"] == "step" for e in read_events(out)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no step event in time")


def test_a_closed_pipe_does_not_stop_training(byte_dataset: Path, tmp_path: Path) -> None:
    # `gpt-train ... 2>&1 | head -2`; the progress bar is on (no --no-progress) but not drawn,
    # since the output is not a terminal
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", *_flags(byte_dataset, out, 30)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    head = [proc.stdout.readline(), proc.stdout.readline()]
    proc.stdout.close()  # what `head -2` does after two lines
    assert proc.wait(timeout=120) == 0
    assert not any("\r" in line for line in head), head
    assert _saved_step(out) == 30 and read_events(out)[-1]["reason"] == "completed"
    log = (out / "train.log").read_text()
    assert "console output stopped (BrokenPipeError); the run goes on and logs here only" in log
    assert "step 30/30" in log  # lines after the pipe closed still reach train.log


def test_ctrl_c_and_sigterm_save_the_step_reached_with_the_console_gone(
        byte_dataset: Path, tmp_path: Path) -> None:
    # `gpt-train ... 2>&1 | tee log`, then Ctrl-C: tee dies with the same Ctrl-C
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name
        cmd = [sys.executable, "-m", "trainer.cli", *_flags(byte_dataset, out, 1_000_000)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for_steps(proc, out)
            assert proc.stdout is not None
            proc.stdout.close()
            time.sleep(0.5)  # steps log into the closed pipe
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        end = read_events(out)[-1]
        assert (end["type"], end["interrupted"], end["signal"]) == ("end", True, sig.name)
        assert _saved_step(out) == end["step"] >= 1


def test_torchrun_ranks_stop_cleanly_and_the_launcher_exits_0(byte_dataset: Path,
                                                              tmp_path: Path) -> None:
    # plain torchrun exits 1 with a SignalException traceback here, after the ranks have saved
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "trainer.launch", "--standalone", "--nproc_per_node=2",
           "-m", "trainer.cli", *_flags(byte_dataset, out, 1_000_000),
           "--gradient-accumulation-steps", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_steps(proc, out, timeout=180)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    end = read_events(out)[-1]
    assert (end["type"], end["interrupted"], end["signal"]) == ("end", True, "SIGTERM")
    assert _saved_step(out) == end["step"] >= 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # redirected output gets the log lines (one per log_interval), never the bar's \r frames
    for stream, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = ProgressBar(0, 10, enabled=True)
        for _ in range(10):
            bar.update(1, loss=1.5)
        bar.close()
        assert ("\r" in stream.getvalue() and "10/10" in stream.getvalue()) is drawn
