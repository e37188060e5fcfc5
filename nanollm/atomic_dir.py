"""Replace a folder atomically, and clean up what a killed writer left behind.

    tmp = make_temp_dir(final)          # hidden sibling .<name>.tmp-<pid>-<host>-<tag>-<rand>
    ...write the files into tmp...
    finish_files(tmp)                   # durable, and readable as the umask allows
    replace_dir_atomically(tmp, final)  # final now holds exactly tmp's files

A replace renames an existing `final` aside to `.<name>.old-<pid>-<host>-<tag>-<rand>`, renames
tmp into place and only then deletes the old folder, so one complete copy is on disk at every
moment. Both hidden names carry the writer's process id, a hash of its host name and a tag drawn
once per process. That lets the next writer of the same folder (never a reader) tell a dead
writer's leftovers from a live one's: it deletes the dead writer's temp and moved-aside folders,
puts a moved-aside folder back when a crash came between the two renames, and leaves alone the
folders of a writer that is still running (another process, or another thread of this one).

Readers change nothing on disk. `wait_for_replace` lets one ride out the instant between a live
writer's two renames, when `final` does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# Drawn once per process: a later process that reuses our pid has another tag, so it can tell
# that our leftovers are not its own.
_PROCESS_TAG = secrets.token_hex(3)
# How long a reader waits for a live writer to finish a replace (the gap is two renames long).
_WAIT_S = 5.0
_READ_S = 10.0  # how long read_stable reads again while a writer keeps replacing the folder
_MISSING_LOOKS = 5
T = TypeVar("T")


def _host_tag() -> str:
    """6 hex digits of the host name: a pid means nothing on another host of a shared disk."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _entry(path: str | Path) -> Path:
    """`path` as its real parent folder plus its own name: renames must not go through `..` or
    a symlinked parent that the first rename may move away (`run/latest/../latest`)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def _writer_name(final: Path, kind: str) -> Path:
    return final.with_name(f".{final.name}.{kind}-{os.getpid()}-{_host_tag()}-{_PROCESS_TAG}-"
                           f"{secrets.token_hex(3)}")


def _leftover_pattern(final: Path) -> re.Pattern[str]:
    """Our hidden names for `final`; the second form (8 hex digits, no writer) is older
    nanoLLM's, only ever restored, never deleted, since its writer cannot be identified."""
    name = re.escape(final.name)
    return re.compile(rf"\.{name}\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{{6}})-"
                      rf"(?P<tag>[0-9a-f]{{6}})-[0-9a-f]{{6}}|(?P<legacy>[0-9a-f]{{8}}))")


def _writer_alive(pid: int, host: str, tag: str) -> bool:
    """False only when we are sure the writer is gone; unknown hosts count as alive."""
    if host != _host_tag():
        return True
    if pid == os.getpid():
        return tag == _PROCESS_TAG
    if os.name != "posix":  # os.kill(pid, 0) is a probe only on POSIX; elsewhere it signals
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the pid exists, owned by someone else
        return True
    return True


def _leftovers(final: Path) -> list[tuple[Path, str, bool | None]]:
    """(path, 'tmp' | 'old', writer alive) for each hidden folder of `final`; alive is None for
    the older names without a writer."""
    pattern = _leftover_pattern(final)
    try:
        entries = list(final.parent.iterdir())
    except OSError:  # no parent yet, or not listable: nothing of ours there
        return []
    found: list[tuple[Path, str, bool | None]] = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        alive = None if match["legacy"] else _writer_alive(int(match["pid"]), match["host"],
                                                            match["tag"])
        found.append((entry, match["kind"], alive))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def recover_interrupted_save(final: str | Path) -> None:
    """Writers only: clean up after writers of `final` that died mid-save.

    When `final` is missing, the newest moved-aside folder of a dead writer is renamed back into
    place (the crash came between the two renames). Every other temp or moved-aside folder of a
    dead writer is deleted. A live writer's folders are never touched."""
    final = _entry(final)
    found = _leftovers(final)
    if not os.path.lexists(final):
        restorable = [p for p, kind, alive in found if kind == "old" and alive is not True]
        if restorable:
            newest = max(restorable, key=_mtime)
            with contextlib.suppress(OSError):  # another writer restored it first
                os.replace(newest, final)
    for path, _, alive in found:
        if alive is False and os.path.lexists(path):
            _remove(path)


def interrupted_copy(final: str | Path) -> Path | None:
    """The folder a killed writer moved `final` aside to, when `final` is missing (the crash
    came between the two renames); the next writer puts it back. Reads only."""
    final = _entry(final)
    if os.path.lexists(final):
        return None
    found = [p for p, kind, alive in _leftovers(final) if kind == "old" and alive is not True]
    return max(found, key=_mtime) if found else None


def make_temp_dir(final: str | Path) -> Path:
    """Create and return the hidden sibling folder to write `final`'s new contents into.
    Creates the parent folder and first cleans up after dead writers of `final`."""
    Path(final).parent.mkdir(parents=True, exist_ok=True)
    final = _entry(final)
    recover_interrupted_save(final)
    tmp = _writer_name(final, "tmp")
    tmp.mkdir()
    return tmp


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread
    for an instant); 0o022 where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def finish_files(folder: str | Path) -> None:
    """Make the written files durable and readable like any other file the user creates
    (safetensors writes through a private temp file, mode 0600, which a server running as
    another user could not read)."""
    mode = 0o666 & ~_umask()
    for file in Path(folder).iterdir():
        if not file.is_file() or file.is_symlink():
            continue
        os.chmod(file, mode)
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir_atomically(tmp: str | Path, final: str | Path) -> None:
    """Move the folder `tmp` to `final` (a sibling in the same folder, hence the same file
    system). An existing `final` is renamed aside first and deleted only once tmp is in place;
    if the second rename fails, the old folder is put back. Leftovers of dead writers of
    `final` are cleaned up first. `tmp` is not removed on failure: the caller owns it."""
    tmp, final = _entry(tmp), _entry(final)
    if tmp.parent != final.parent:  # else the first rename could move tmp away with final
        raise ValueError(f"{tmp} must be in the same folder as {final}")
    recover_interrupted_save(final)
    old = None
    if os.path.lexists(final):
        old = _writer_name(final, "old")
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:  # put the previous folder back rather than leave nothing
            os.replace(old, final)
        raise
    _fsync_dir(final.parent)
    if old is not None:
        _remove(old)


def dir_identity(path: str | Path) -> tuple[int, ...] | None:
    """What changes when `path` is replaced by another folder (None when it is missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mtime_ns)


def read_stable(path: str | Path, read: Callable[[], T],
                retry_on: type[Exception] | tuple[type[Exception], ...],
                timeout_s: float = _READ_S) -> T:
    """Readers: `read()` of a folder another process may replace meanwhile, so that all it
    reads comes from one version. A read that failed (with `retry_on`) or succeeded while the
    folder changed is done again, for up to timeout_s. A failure is final when the folder is
    the same before and after it twice in a row (it is broken: twice, because a new folder can
    reuse a deleted one's inode within one timestamp tick), or when it is missing at both
    looks _MISSING_LOOKS times (a missing folder, not the instant between a writer's two
    renames, which wait_for_replace waits out)."""
    deadline = time.monotonic() + timeout_s
    same = missing = 0
    while True:
        wait_for_replace(path)
        before = dir_identity(path)
        try:
            result = read()
        except retry_on:
            now = dir_identity(path)
            if now is None and before is None:
                missing += 1
                if missing >= _MISSING_LOOKS:
                    raise
            elif now == before:
                same += 1
                if same >= 2:
                    raise
            elif time.monotonic() > deadline:
                raise
            continue
        if dir_identity(path) == before or time.monotonic() > deadline:
            return result


def wait_for_replace(final: str | Path, timeout_s: float = _WAIT_S) -> None:
    """Readers: if `final` is missing because a live writer is between its two renames, wait
    (at most timeout_s) until it is back. Changes nothing on disk."""
    final = _entry(final)
    deadline = time.monotonic() + timeout_s
    while not os.path.lexists(final) and time.monotonic() < deadline:
        if not any(kind == "old" and alive for _, kind, alive in _leftovers(final)):
            return
        time.sleep(0.002)
