"""Atomic folder replace: readers never change the disk, and the next save cleans up after a
writer that was killed mid-save (and only after a dead one)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from nanollm import atomic_dir
from nanollm.checkpoint import (
    CheckpointError,
    is_checkpoint_dir,
    load_checkpoint,
    make_temp_dir,
    replace_dir_atomically,
    save_checkpoint,
)
from nanollm.config import ModelConfig
from nanollm.model import GPT

SMALL = ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=257,
                    tokenizer="byte")


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _listing(folder: Path) -> list[tuple[str, int]]:
    """Every path under folder with its inode: any rename or deletion changes it."""
    return sorted((str(p.relative_to(folder)), p.lstat().st_ino) for p in folder.rglob("*"))


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def _name(final: Path, kind: str, pid: int, tag: str = "abcdef") -> Path:
    """A hidden name exactly as a writer with this pid on this host would have made it."""
    return final.with_name(f".{final.name}.{kind}-{pid}-{atomic_dir._host_tag()}-{tag}-012345")


@pytest.fixture
def small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return GPT(SMALL).state_dict()


def test_readers_poll_while_a_writer_saves_in_a_loop(tmp_path: Path,
                                                      small_state: dict[str, torch.Tensor]
                                                      ) -> None:
    """A UI or server polling latest/ during a run must neither fail nor break the run."""
    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 0})
    done = threading.Event()
    reader_errors: list[BaseException] = []
    steps_seen: list[int] = []

    def read_forever() -> None:
        try:
            while not done.is_set():
                assert is_checkpoint_dir(final)
                steps_seen.append(load_checkpoint(final).provenance["step"])
        except BaseException as exc:  # reported by the main thread
            reader_errors.append(exc)

    reader = threading.Thread(target=read_forever)
    reader.start()
    step, deadline = 0, time.monotonic() + 60
    try:  # save many times, until the reader has read many times too (or failed)
        while ((step < 50 or len(steps_seen) < 50) and not reader_errors
               and time.monotonic() < deadline):
            step += 1
            save_checkpoint(final, small_state, SMALL, provenance={"step": step})
    finally:
        done.set()
        reader.join()
    assert reader_errors == []
    assert len(steps_seen) >= 50 and steps_seen == sorted(steps_seen)
    assert step >= 50 and load_checkpoint(final).provenance == {"step": step}
    assert _hidden(tmp_path) == []


_SAVE_N_TIMES = """
import sys, torch
from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.model import GPT

config = ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=257,
                     tokenizer="byte")
state = GPT(config).state_dict()
for step in range(1, int(sys.argv[2]) + 1):
    save_checkpoint(sys.argv[1], state, config, provenance={"step": step})
"""


def test_a_reader_never_sees_a_missing_or_mixed_checkpoint_while_another_process_saves(
        tmp_path: Path, small_state: dict[str, torch.Tensor]) -> None:
    """Across processes reads also land between the writer's two renames (when latest/ does
    not exist for an instant) and across a replace (config from one save, weights from the
    next); both are waited out or read again."""
    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 0})
    writer = subprocess.Popen([sys.executable, "-c", _SAVE_N_TIMES, str(final), "300"],
                              stderr=subprocess.PIPE, text=True)
    steps_seen = []
    try:
        while writer.poll() is None:
            for _ in range(50):  # cheap checks, many of them: some fall between the renames
                assert is_checkpoint_dir(final)
            ckpt = load_checkpoint(final)
            assert ckpt.config == SMALL
            steps_seen.append(ckpt.provenance["step"])
    finally:
        writer.kill()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > 200
    assert _hidden(tmp_path) == []


def test_a_weights_file_replaced_between_the_check_and_the_open_is_read_again(
        tmp_path: Path, small_state: dict[str, torch.Tensor],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The gap CI once hit: model.safetensors passes is_file(), then a save replaces the folder
    before safetensors opens it (its mmap backend can raise a bare RuntimeError for that, not
    only FileNotFoundError)."""
    from nanollm import checkpoint

    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 1})
    real_load_file = checkpoint.load_file
    calls = []

    def replaced_once(filename: str) -> dict[str, torch.Tensor]:
        calls.append(filename)
        if len(calls) == 1:  # the writer's save lands right now; safetensors' error, as in CI
            save_checkpoint(final, small_state, SMALL, provenance={"step": 2})
            raise RuntimeError(f"unable to open file <{filename}> in read-only mode: "
                               "No such file or directory (2)")
        return real_load_file(filename)

    monkeypatch.setattr(checkpoint, "load_file", replaced_once)
    assert load_checkpoint(final).provenance == {"step": 2}
    assert len(calls) == 2


def test_one_failed_read_of_an_unchanged_looking_folder_is_read_again(
        tmp_path: Path, small_state: dict[str, torch.Tensor],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI once saw a read fail although the folder's identity (inode, ctime, mtime) looked the
    same before and after: a new folder can reuse a deleted one's inode within one timestamp
    tick. One such failure is read again; a folder that fails twice is broken, and fails."""
    from nanollm import checkpoint

    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 1})
    real_load_file = checkpoint.load_file
    calls = []

    def fails_once(filename: str) -> dict[str, torch.Tensor]:
        calls.append(filename)
        if len(calls) == 1:
            raise FileNotFoundError(filename)  # what a read across a replace sees
        return real_load_file(filename)

    monkeypatch.setattr(checkpoint, "load_file", fails_once)
    assert load_checkpoint(final).provenance == {"step": 1}
    assert len(calls) == 2

    (final / "model.safetensors").write_bytes(b"not safetensors")
    calls.clear()
    with pytest.raises(CheckpointError, match="corrupt or unreadable safetensors file"):
        load_checkpoint(final)
    assert len(calls) == 2  # read twice, then final


def test_a_reader_between_a_live_writers_two_renames_waits_for_the_second(
        tmp_path: Path, small_state: dict[str, torch.Tensor]) -> None:
    """The state a live writer is in for an instant, held for 0.3 s: latest/ is moved aside
    (under this process's name) and the new folder is not yet in place."""
    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 1})
    new = make_temp_dir(final)
    for file in final.iterdir():
        (new / file.name).write_bytes(file.read_bytes())
    aside = atomic_dir._writer_name(final, "old")
    os.replace(final, aside)
    second_rename = threading.Timer(0.3, replace_dir_atomically, (new, final))
    second_rename.start()
    try:
        assert is_checkpoint_dir(final)
        assert load_checkpoint(final).provenance == {"step": 1}
    finally:
        second_rename.join()
    shutil.rmtree(aside)


def test_readers_change_nothing_on_disk(tmp_path: Path,
                                        small_state: dict[str, torch.Tensor]) -> None:
    """Even with a dead writer's leftovers next to it, and the checkpoint moved aside."""
    final = save_checkpoint(tmp_path / "latest", small_state, SMALL)
    aside = _name(final, "old", _dead_pid())
    os.replace(final, aside)
    _name(final, "tmp", _dead_pid()).mkdir()
    before = _listing(tmp_path)
    started = time.monotonic()
    assert not is_checkpoint_dir(final)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(final)
    assert str(err.value) == (f"{final}: no such checkpoint folder (a save of it was killed; "
                              f"{aside.name} next to it holds the previous one, and the next "
                              "save puts it back)")
    assert time.monotonic() - started < 1.0  # a dead writer is not waited for
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("final_exists", [True, False], ids=["killed-writing", "killed-between"])
def test_next_save_cleans_up_after_a_dead_writer(tmp_path: Path, final_exists: bool,
                                                 small_state: dict[str, torch.Tensor]) -> None:
    """A writer killed while writing leaves `.latest.tmp-*`; one killed between the two renames
    also leaves `.latest.old-*` and no latest/. The next save removes both (restoring the old
    folder first, so a failure in that save would still leave a checkpoint)."""
    final = save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 1})
    pid = _dead_pid()
    _name(final, "tmp", pid).mkdir()
    (_name(final, "tmp", pid) / "model.safetensors").write_bytes(b"half")
    if not final_exists:
        os.replace(final, _name(final, "old", pid))
        atomic_dir.recover_interrupted_save(final)
        assert load_checkpoint(final).provenance == {"step": 1}
    save_checkpoint(final, small_state, SMALL, provenance={"step": 2})
    assert load_checkpoint(final).provenance == {"step": 2}
    assert _hidden(tmp_path) == []


def test_live_writers_folders_are_left_alone(tmp_path: Path,
                                             small_state: dict[str, torch.Tensor]) -> None:
    """Another thread of this process, another live process and another host are writing;
    a previous process that had our pid is not."""
    final = tmp_path / "latest"
    this_thread = make_temp_dir(final)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other_process = _name(final, "tmp", sleeper.pid)
        host = "000000" if atomic_dir._host_tag() != "000000" else "111111"
        other_host = final.with_name(f".latest.old-{_dead_pid()}-{host}-abcdef-012345")
        earlier_us = _name(final, "tmp", os.getpid(), tag="ffffff")
        for folder in (other_process, other_host, earlier_us):
            folder.mkdir()
        save_checkpoint(final, small_state, SMALL)
        assert this_thread.is_dir() and other_process.is_dir() and other_host.is_dir()
        assert not earlier_us.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


_KILL_BETWEEN_RENAMES = """
import os, signal, sys, torch
from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.model import GPT

config = ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=257,
                     tokenizer="byte")
state = GPT(config).state_dict()
save_checkpoint(sys.argv[1], state, config, provenance={"step": 1})
real_replace = os.replace

def replace_then_die(src, dst):
    real_replace(src, dst)
    if ".old-" in os.fspath(dst):  # the checkpoint is moved aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace_then_die
save_checkpoint(sys.argv[1], state, config, provenance={"step": 2})
"""


def test_sigkill_mid_save_then_next_save_leaves_one_clean_checkpoint(
        tmp_path: Path, small_state: dict[str, torch.Tensor]) -> None:
    final = tmp_path / "latest"
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, str(final)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert not final.exists()
    assert [name.split("-")[0] for name in _hidden(tmp_path)] == [".latest.old", ".latest.tmp"]

    save_checkpoint(final, small_state, SMALL, provenance={"step": 3})
    assert load_checkpoint(final).provenance == {"step": 3}
    assert _hidden(tmp_path) == []


def test_replace_dir_atomically_swaps_whole_folders(tmp_path: Path) -> None:
    final = tmp_path / "data"
    for content in ("one", "two"):
        tmp = make_temp_dir(final)
        (tmp / "file.txt").write_text(content)
        replace_dir_atomically(tmp, final)
        assert [p.name for p in final.iterdir()] == ["file.txt"]
        assert (final / "file.txt").read_text() == content
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_file_modes_follow_the_umask_without_setting_it(
        tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch,
        small_state: dict[str, torch.Tensor]) -> None:
    """os.umask changes the mask of every thread of a server; a save must not call it."""
    old = os.umask(umask)
    try:
        def forbidden(mask: int) -> int:
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", forbidden)
        path = save_checkpoint(tmp_path / "ck", small_state, SMALL)
    finally:
        monkeypatch.undo()
        os.umask(old)
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file


def test_a_path_through_the_folder_being_replaced_still_works(
        tmp_path: Path, small_state: dict[str, torch.Tensor]) -> None:
    """`run/latest/../latest`: the first rename moves `run/latest` away, so the second must not
    go through it."""
    save_checkpoint(tmp_path / "latest", small_state, SMALL, provenance={"step": 1})
    save_checkpoint(tmp_path / "latest" / ".." / "latest", small_state, SMALL,
                    provenance={"step": 2})
    assert load_checkpoint(tmp_path / "latest").provenance == {"step": 2}
    assert _hidden(tmp_path) == []


def test_replace_refuses_a_temp_folder_that_is_not_a_sibling(tmp_path: Path) -> None:
    final = tmp_path / "data"
    final.mkdir()
    inside = final / "new"
    inside.mkdir()
    with pytest.raises(ValueError, match=r"data/new must be in the same folder as .*data$"):
        replace_dir_atomically(inside, final)
    assert inside.is_dir()
