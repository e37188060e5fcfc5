"""gpt-export: --force replaces only a previous export, and every error is one line, exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.export_cli import main as export_main
from nanollm.model import GPT

SMALL = ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=257,
                    tokenizer="byte")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A training run folder: a resumable latest/, a best/, the event log."""
    torch.manual_seed(0)
    state = GPT(SMALL).state_dict()
    run = tmp_path / "run"
    save_checkpoint(run / "latest", state, SMALL, trainer_state={"step": 100})
    save_checkpoint(run / "best", state, SMALL)
    (run / "events.jsonl").write_text('{"event": "start"}\n')
    (run / "train.log").write_text("step 100\n")
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _user_folder(tmp_path: Path) -> str:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    return "notes"


def _a_file(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("mine")
    return "afile"


def _under_a_file(tmp_path: Path) -> str:
    (tmp_path / "afile").write_text("mine")
    return "afile/out"


# (what out_dir is, how to make it, --force, the error after "gpt-export: error: ")
REFUSED: list[tuple[str, Callable[[Path], str], bool, str]] = [
    ("the source", lambda t: "run/latest", True,
     "run/latest is or holds the source run/latest; --force never replaces it"),
    ("the run holding the source", lambda t: "run", True,
     "run is or holds the source run/latest; --force never replaces it"),
    ("the source by another path", lambda t: "run/latest/../latest", True,
     "run/latest/../latest is or holds the source run/latest;"),
    ("a user's folder", _user_folder, True,
     "notes is not a gpt-export output (it holds todo.txt); --force replaces only a previous "
     "export or an empty folder"),
    ("a file", _a_file, True, "afile exists and is not a folder; choose another out_dir"),
    ("under a file", _under_a_file, False, "is a file, so afile/out cannot be created"),
    ("existing without --force", _user_folder, False,
     "notes already exists; pass --force to replace it"),
]


@pytest.mark.parametrize(("what", "make_out", "force", "error"), REFUSED,
                         ids=[case[0] for case in REFUSED])
def test_refused_out_dirs_are_left_untouched(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        what: str, make_out: Callable[[Path], str], force: bool, error: str) -> None:
    tmp_path = run_dir.parent
    monkeypatch.chdir(tmp_path)
    out = make_out(tmp_path)
    before = _snapshot(tmp_path)
    listing = sorted(os.listdir(tmp_path))
    code = export_main(["run/latest", out] + (["--force"] if force else []))
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("gpt-export: error: ") and error in captured.err
    assert captured.err.count("\n") == 1
    assert _snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == listing
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_force_replaces_a_previous_export_or_an_empty_folder(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_dir.parent / "hf"
    assert export_main([str(run_dir / "latest"), str(out)]) == 0
    assert export_main([str(run_dir / "best"), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]
    # the weights are as readable as the files written with open() (safetensors makes 0600)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes
    empty = run_dir.parent / "empty"
    empty.mkdir()
    assert export_main([str(run_dir / "latest"), str(empty), "--force"]) == 0
    assert capsys.readouterr().err == ""
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("source", "out", "error"), [
    ("missing", "out", "gpt-export: error: missing: no such file or folder\n"),
    ("run/train.log", "out", "gpt-export: error: run/train.log: corrupt or not a torch file"),
])
def test_bad_sources_are_one_line_and_create_nothing(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        source: str, out: str, error: str) -> None:
    monkeypatch.chdir(run_dir.parent)
    assert export_main([source, f"new/{out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1
    assert not (run_dir.parent / "new").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_place_names_out_dir_not_a_temp_folder(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main([str(run_dir / "latest"), "/proc/forbidden"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-export: error: cannot write /proc/forbidden (in /proc): ")
    assert "Errno" not in err and ".tmp-" not in err and err.count("\n") == 1


def test_the_installed_command_refuses_to_replace_the_run(run_dir: Path) -> None:
    """The path a user takes: the console script, `gpt-export RUN/latest RUN --force`."""
    before = _snapshot(run_dir)
    exe = Path(sys.executable).with_name("gpt-export")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nanollm.export_cli"]
    proc = subprocess.run([*command, str(run_dir / "latest"), str(run_dir), "--force"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"gpt-export: error: {run_dir} is or holds the source "
                           f"{run_dir / 'latest'}; --force never replaces it. Choose another "
                           "out_dir\n")
    assert _snapshot(run_dir) == before
