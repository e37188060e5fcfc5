"""Progress of work counted in bytes (a download, a tokenizer pass over the input).

    with ByteProgress("tokenize", total=n_bytes, enabled=show_progress) as progress:
        for block in blocks:
            progress.update(len(block))

On a terminal this is a tqdm bar. Anywhere else (a log file, a pipe, a server, a job's log) a
bar would fill the output with carriage-return frames, so a line is logged every `interval`
seconds instead, and nothing at all for work that ends sooner.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 30.0


def is_terminal(stream: TextIO | None) -> bool:
    """True when `stream` is an open interactive terminal."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _size(n: float) -> str:
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


class ByteProgress:
    """A tqdm bar when `stream` (default: sys.stderr) is a terminal, else INFO lines on
    `log` every `interval` seconds (default LOG_INTERVAL_S); nothing when not enabled."""

    def __init__(self, desc: str, total: int | None, *, enabled: bool = True,
                 interval: float | None = None, stream: TextIO | None = None,
                 log: logging.Logger = logger) -> None:
        self.desc, self.total, self.done = desc, total, 0
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self._log = log if enabled else None
        self._bar: tqdm | None = None
        stream = stream if stream is not None else sys.stderr
        if enabled and is_terminal(stream):
            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=stream)
        self._start = self._last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self._log is not None and now - self._last >= self.interval:
            self._last = now
            self._log.info("%s: %s", self.desc, self.describe(now - self._start))

    def describe(self, elapsed: float) -> str:
        """"12.0 MB of 100.0 MB (12%), 3.1 MB/s" (no total: "12.0 MB, 3.1 MB/s")."""
        done = _size(self.done)
        if self.total:
            done += f" of {_size(self.total)} ({100 * self.done / self.total:.0f}%)"
        return f"{done}, {_size(self.done / max(elapsed, 1e-9))}/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
