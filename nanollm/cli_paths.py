"""Checkpoint paths given on a command line that name a gpt-train run folder instead of one of
its checkpoints.

gpt-train writes its checkpoints as folders inside the run folder (`--out-dir`): `latest/` (the
last save, resumable) and `best/` (the lowest validation loss). A user who passes the run folder
itself (`--checkpoint out`), or a checkpoint file name from nanoGPT-style projects that is not
there (`out/ckpt.pt`, `out/best_ckpt.pt`), gets the paths that exist instead of the loader's
generic "not a checkpoint" / "no such file". gpt-generate, gpt-export and gpt-train use this.
"""

from __future__ import annotations

from pathlib import Path

from nanollm.checkpoint import is_checkpoint_dir

# The checkpoint folders of a run, as trainer/run_dir.py names them, with what each holds.
RUN_CHECKPOINTS = {"best": "lowest validation loss", "latest": "last save, resumable"}
# Single-file names other trainers use for the same two checkpoints.
FILE_NAMES = {"ckpt.pt": "latest", "best_ckpt.pt": "best"}


def _run_checkpoints(folder: Path) -> list[str]:
    return [name for name in RUN_CHECKPOINTS if is_checkpoint_dir(folder / name)]


def _listing(given: str, names: list[str]) -> str:
    return " or ".join(f"{given}/{name} ({RUN_CHECKPOINTS[name]})" for name in names)


def run_folder(path: str | Path) -> str | None:
    """The run folder, as spelt in `path`, when `path` is one or names a missing entry in one."""
    given = str(path).rstrip("/") or str(path)
    p = Path(path).expanduser()
    if p.is_dir():
        plain = not (p / "config.json").exists() and not (p / "ckpt.pt").exists()
        return given if plain and _run_checkpoints(p) else None
    if not p.exists() and p.parent.is_dir() and _run_checkpoints(p.parent):
        return str(Path(given).parent)
    return None


def run_folder_hint(path: str | Path) -> str | None:
    """The message for `path` when it is a run folder or a missing entry inside one, else None
    (the path is left to the loader and its own messages)."""
    folder = run_folder(path)
    if folder is None:
        return None
    names = _run_checkpoints(Path(folder).expanduser())
    given = str(path).rstrip("/") or str(path)
    if given == folder:
        return (f"{given}: a gpt-train run folder, not a checkpoint; its checkpoints are "
                f"folders inside it: {_listing(given, names)}")
    same = FILE_NAMES.get(Path(given).name)
    names = sorted(names, key=lambda name: name != same)  # the counterpart of ckpt.pt first
    return (f"{given}: no such file or folder; {folder} is a gpt-train run folder, whose "
            f"checkpoints are folders: {_listing(folder, names)}")
