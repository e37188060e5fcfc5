"""Files read from a folder stay inside it: a link, or a name listed in one of its files, must
not lead elsewhere (a folder dataset with `link.txt -> /etc/passwd`, a shard index naming
`../../../etc/passwd`).

    why = escape_reason(folder / "link.txt", folder)   # None when it stays inside
    is_plain_name("shards/model-00001.safetensors")     # True; "../x" and "/x" are False

A folder given by the user may itself be a link; what is checked is where the files in it lead.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


def _real(path: Path) -> Path:
    # realpath follows every link and, unlike Path.resolve on Python < 3.13, never raises on
    # a link loop (it returns a path that then is not inside anything).
    return Path(os.path.realpath(path))


def escape_reason(path: Path, folder: Path, *, also: tuple[Path, ...] = ()) -> str | None:
    """None when `path`, with all links followed, lies inside `folder` (or inside one of
    `also`); else a phrase for an error message ("leads to /etc/passwd, outside data/c")."""
    target = _real(path)
    for root in (folder, *also):
        real_root = _real(root)
        if target == real_root or target.is_relative_to(real_root):
            return None
    return f"leads to {target}, outside {folder}"


def is_plain_name(name: str) -> bool:
    """A relative path with no '..' part, in POSIX or Windows spelling: joined to a folder, it
    names something below that folder (links aside)."""
    if not name or "\0" in name:
        return False
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return False
    return True
