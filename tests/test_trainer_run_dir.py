"""The run folder: --overwrite replaces an earlier run (and only its files) once the new run has
loaded; --eval-only reports what it measured, not a best model it never saved."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nanollm.checkpoint import load_checkpoint
from trainer.cli import main
from trainer.events import read_events

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]
FAST = ["--device", "cpu", "--dtype", "float32", "--no-progress", "--num-threads", "1",
        "--batch-size", "2", "--eval-iters", "1"]


@pytest.fixture
def old_run(byte_dataset: Path, tmp_path: Path) -> Path:
    """A finished 4-step run, plus a file of the user's in the same folder."""
    out = tmp_path / "run"
    assert main(["--data-path", str(byte_dataset), "--out-dir", str(out), *SHAPE, *FAST,
                 "--max-iters", "4", "--eval-interval", "4"]) == 0
    (out / "notes.txt").write_text("mine")
    return out


def test_overwrite_replaces_the_earlier_run_and_nothing_else(
        old_run: Path, byte_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--data-path", str(byte_dataset), "--out-dir", str(old_run), *SHAPE, *FAST,
                 "--max-iters", "2", "--eval-interval", "2", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert (f"--overwrite: deleted the earlier run's latest, best, events.jsonl, train.log, "
            f"train_config.yaml in {old_run}") in out
    assert (old_run / "notes.txt").read_text() == "mine"
    events = read_events(old_run)
    assert [e["type"] for e in events].count("start") == 1 and events[0]["type"] == "start"
    assert load_checkpoint(old_run / "best").provenance["step"] == 2  # the new run's best
    assert "deleted the earlier run's" in (old_run / "train.log").read_text()


def test_overwrite_of_a_run_that_cannot_start_keeps_the_earlier_one(
        old_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_bytes() for p in sorted(old_run.rglob("*")) if p.is_file()}
    tiny = tmp_path / "tiny.txt"  # too short for block_size 32: found while preparing it
    tiny.write_text("To be, or not to be.")
    assert main(["--data-path", str(tiny), "--data-dir", str(tmp_path / "data"), "--out-dir",
                 str(old_run), *SHAPE, *FAST, "--tokenizer", "byte", "--max-iters", "2",
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error: ") and "block_size" in err, err
    assert {p: p.read_bytes() for p in sorted(old_run.rglob("*")) if p.is_file()} == before


def test_eval_only_reports_the_loss_it_measured(
        old_run: Path, byte_dataset: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # from scratch: no best model exists, and an evaluation that saves nothing is not one
    fresh = tmp_path / "fresh"
    capsys.readouterr()
    assert main(["--data-path", str(byte_dataset), "--out-dir", str(fresh), *SHAPE, *FAST,
                 "--eval-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    val = read_events(fresh)[1]["val_loss"]
    assert lines[-2].endswith(f"val loss {val:.4f}")  # no "(best so far)"
    assert lines[-1].startswith("done (eval only) at step 0 in ")
    assert lines[-1].endswith(f"; val loss {val:.4f}")
    assert "inf" not in "\n".join(lines) and not (fresh / "best").exists()
    # resumed: the run's own best is shown next to the new measurement, and stays the best
    best = read_events(old_run)[-1]["best_val_loss"]
    shutil.rmtree(fresh)
    assert main(["--init-from", "resume", "--out-dir", str(old_run), "--eval-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].endswith(f" (best {best:.4f})")
    evals = [e for e in read_events(old_run) if e["type"] == "eval"]
    assert evals[-1]["improved"] is False and evals[-1]["best_val_loss"] == best


def test_resume_puts_back_a_latest_that_a_killed_save_moved_aside(
        old_run: Path, byte_dataset: Path) -> None:
    """A save killed between its two renames leaves latest/ moved aside under a hidden name and
    no latest/; resuming restores it (the run is that folder's writer) and continues from it."""
    from nanollm import atomic_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    aside = old_run / f".latest.old-{int(dead.stdout)}-{atomic_dir._host_tag()}-abcdef-012345"
    os.replace(old_run / "latest", aside)
    assert main(["--init-from", "resume", "--out-dir", str(old_run), *FAST,
                 "--max-iters", "6", "--eval-interval", "2"]) == 0
    assert load_checkpoint(old_run / "latest").provenance["step"] == 6
    assert not aside.exists()
