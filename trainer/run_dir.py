"""The run folder (`out_dir`): checked before any work, written only once the run can start.

A run writes `latest/`, `best/`, `events.jsonl`, `train.log` and `train_config.yaml` into
out_dir. A new run (anything but `init_from: resume`) refuses a folder that already holds one of
them: it would append its events to the old run's and could replace the old `best/` with a worse
model. `overwrite` (`gpt-train --overwrite`) deletes exactly those entries, and nothing else in
the folder, once the new run has loaded its model and data; so a run that fails to start leaves
the old one as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nanollm.config import ConfigError, TrainingConfig
from trainer.events import EVENTS_FILE
from trainer.model_init import BEST, LATEST, init_kind
from trainer.progress import LOG_FILE
from trainer.run_config import RUN_CONFIG_FILE

RUN_ENTRIES = (LATEST, BEST, EVENTS_FILE, LOG_FILE, RUN_CONFIG_FILE)


def check_writable_folder(path: str | Path, field: str) -> None:
    """ConfigError unless `path` is a folder, or could be made one, that this process may write:
    an existing file in its place (or above it) and a read-only parent are named up front."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field} {str(path)!r} is a file, not a folder; give a folder path")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{field} {str(path)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{field} {str(path)!r} cannot be written: no write permission on "
                          f"{str(existing)!r}")


def previous_run(out_dir: str | Path) -> list[str]:
    """Names of the entries of an earlier run found in `out_dir` (empty when there are none)."""
    out = Path(out_dir).expanduser()
    return [name for name in RUN_ENTRIES if os.path.lexists(out / name)]


def _inside(path: str | Path, folder: Path) -> bool:
    resolved, root = Path(path).expanduser().resolve(), folder.resolve()
    return resolved == root or root in resolved.parents


def check_out_dir(cfg: TrainingConfig, *, overwrite: bool) -> None:
    """The out_dir checks of preflight: a writable folder, and no earlier run in it unless this
    run resumes it or `overwrite` was asked for (and deletes nothing the run reads)."""
    check_writable_folder(cfg.out_dir, "out_dir")
    if init_kind(cfg.init_from) == "resume":
        if overwrite:
            raise ConfigError("--overwrite starts a new run in place of an earlier one; it does "
                              "not go with --init-from resume, which continues the run")
        return
    found = previous_run(cfg.out_dir)
    if not found:
        return
    if not overwrite:
        raise ConfigError(
            f"out_dir {cfg.out_dir!r} already holds a run ({', '.join(found)}); continue it with "
            "--init-from resume, choose another --out-dir, or give --overwrite to delete that "
            "run and start a new one there")
    if init_kind(cfg.init_from) != "path":
        return
    for name in (LATEST, BEST):
        entry = Path(cfg.out_dir).expanduser() / name
        if entry.exists() and _inside(cfg.init_from, entry):
            raise ConfigError(f"--overwrite would delete {str(entry)!r}, the checkpoint "
                              f"init_from {cfg.init_from!r} starts from; write the new run to "
                              "another --out-dir")


def clear_previous_run(out_dir: str | Path) -> list[str]:
    """Delete the entries of an earlier run from `out_dir` (other files stay); returns their
    names."""
    out = Path(out_dir).expanduser()
    removed = previous_run(out)
    for name in removed:
        entry = out / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return removed
