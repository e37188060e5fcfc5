"""Spellings of nanoLLM_gpt's README (docs/migration.md) as a user types them here.

Checkpoint paths in the spelling of nanoGPT-style projects (`out/ckpt.pt`, `out/best_ckpt.pt`,
or the run folder `out` itself) given to gpt-generate, gpt-export and gpt-train after a real
gpt-train run: one line on stderr that names the run's checkpoint folders, exit code 2, nothing
written. The folders it names load. `python examples/basic_usage.py` runs python_api.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nanollm.export_cli import main as export_main
from nanollm.generate_cli import main as generate_main
from trainer.cli import main as train_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent

MAINS: dict[str, Callable[[list[str]], int]] = {
    "gpt-generate": generate_main, "gpt-export": export_main, "gpt-train": train_main}
LATEST, BEST = "out/latest (last save, resumable)", "out/best (lowest validation loss)"
RESUME = "; or continue that run itself with --init-from resume --out-dir out"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory, byte_dataset: Path) -> Path:
    """A folder holding `out/`, the run of a real (tiny, 2-step) gpt-train."""
    root = tmp_path_factory.mktemp("migration")
    code = train_main(["--data-path", str(byte_dataset), "--out-dir", str(root / "out"),
                       "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
                       "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1",
                       "--batch-size", "2", "--device", "cpu", "--no-progress"])
    assert code == 0
    assert (root / "out" / "latest").is_dir() and (root / "out" / "best").is_dir()
    return root


CASES = [
    ("gpt-generate", ["--checkpoint", "out/ckpt.pt", "--prompt", "The future of AI"],
     f"out/ckpt.pt: no such file or folder; out is a gpt-train run folder, whose checkpoints "
     f"are folders: {LATEST} or {BEST}"),
    ("gpt-generate", ["--checkpoint", "out/best_ckpt.pt"],
     f"out/best_ckpt.pt: no such file or folder; out is a gpt-train run folder, whose "
     f"checkpoints are folders: {BEST} or {LATEST}"),
    ("gpt-generate", ["--checkpoint", "out"],
     f"out: a gpt-train run folder, not a checkpoint; its checkpoints are folders inside it: "
     f"{BEST} or {LATEST}"),
    ("gpt-export", ["out/ckpt.pt", "hf"],
     f"out/ckpt.pt: no such file or folder; out is a gpt-train run folder, whose checkpoints "
     f"are folders: {LATEST} or {BEST}"),
    ("gpt-export", ["out/", "hf"],
     f"out: a gpt-train run folder, not a checkpoint; its checkpoints are folders inside it: "
     f"{BEST} or {LATEST}"),
    ("gpt-train", ["--init-from", "out/ckpt.pt", "--out-dir", "ft"],
     f"--init-from out/ckpt.pt: no such file or folder; out is a gpt-train run folder, whose "
     f"checkpoints are folders: {LATEST} or {BEST}{RESUME}"),
    ("gpt-train", ["--init-from", "out", "--out-dir", "ft"],
     f"--init-from out: a gpt-train run folder, not a checkpoint; its checkpoints are folders "
     f"inside it: {BEST} or {LATEST}{RESUME}"),
]


@pytest.mark.parametrize(("program", "args", "message"), CASES,
                         ids=[f"{c[0]} {c[1][1] if c[0] != 'gpt-export' else c[1][0]}"
                              for c in CASES])
def test_a_run_folder_path_names_its_checkpoints(
        program: str, args: list[str], message: str, run_folder: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(run_folder)
    capsys.readouterr()
    assert MAINS[program](args) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"{program}: error: {message}"]
    assert out == ""
    assert sorted(p.name for p in run_folder.iterdir()) == ["out"]  # no hf/, ft/, data/


def test_the_folders_named_load(run_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(run_folder)
    for folder in ("out/latest", "out/best"):
        assert generate_main(["--checkpoint", folder, "--prompt", "ROMEO:", "--max-tokens", "4",
                              "--quiet"]) == 0
        assert capsys.readouterr().out.startswith("ROMEO:")


def test_other_missing_paths_keep_the_plain_message(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert generate_main(["--checkpoint", "out/ckpt.pt"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "gpt-generate: error: out/ckpt.pt: no such file or folder"]


def test_basic_usage_example_runs_the_python_api_tour(tmp_path: Path) -> None:
    text = (REPO / "nanollm" / "assets" / "corpus" / "shakespeare.txt").read_bytes()[:20_000]
    (tmp_path / "small.txt").write_bytes(text)
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "basic_usage.py"), "--device", "cpu",
         "--max-tokens", "10", "--samples", "2", "--data", "small.txt", "--out-dir", "small",
         "--tokenizer", "byte"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
        text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("/nanollm/assets/demo (nanollm): 4 layers, 4 heads, 256 wide, "
                             "vocab 257, tokenizer byte, 3.23M params")
    assert "stream finished: length, 10 tokens, same text as generate: True" in lines
    assert lines[-2:] == [
        "dataset: small: 18000 train and 2000 val tokens (byte tokenizer, uint16 ids)",
        "train on it: gpt-train --data-path small --max-iters 500"]
