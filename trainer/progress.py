"""Human-facing output of a run: the console progress bar (tqdm, with ETA) and `train.log`.

Only rank 0 creates a visible bar and writes the log; other ranks get a silent one. The bar is
drawn only on a terminal: redirected to a file or a pipe, its `\\r` frames would fill the log, and
the log lines (one per log_interval) already say how far the run is. Log lines go through
`tqdm.write`, so on a terminal they print above the bar instead of tearing it.

Console output never stops a run: when the console goes away (`| head`, a closed terminal, `tee`
killed by the same Ctrl-C), lines go on to `train.log` only and the process's stdout is pointed
at /dev/null, so neither later lines nor Python's final flush fail.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO, TextIO

from tqdm import tqdm

LOG_FILE = "train.log"


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _detach(stream: TextIO) -> None:
    """Point a broken console stream's file descriptor at /dev/null (when it has one)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):  # no file descriptor (captured), or already closed
        pass
    finally:
        os.close(devnull)


class RunLog:
    """Prints lines on the console and appends them, time-stamped, to `<out_dir>/train.log`.

    The file is opened by `open()`, once the run has started; lines logged before that are kept
    and written first, so a run that fails to start leaves no file behind. `to_file=False` (ranks
    other than 0) keeps nothing."""

    def __init__(self, *, console: bool = True, to_file: bool = True) -> None:
        self.console = console
        self.to_file = to_file
        self._file: IO[str] | None = None
        self._pending: list[str] = []

    def open(self, out_dir: str | Path) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self._file = (Path(out_dir) / LOG_FILE).open("a", encoding="utf-8")
        for line in self._pending:
            self._file.write(line + "\n")
        self._pending.clear()
        self._file.flush()

    def info(self, message: str) -> None:
        if self.console:
            self._print(message)
        self._append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")

    def _print(self, message: str) -> None:
        try:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()
        except (OSError, ValueError) as exc:  # BrokenPipeError, or a closed sys.stdout
            self.console = False
            _detach(sys.stdout)
            self._append(f"console output stopped ({type(exc).__name__}); the run goes on and "
                         "logs here only")

    def _append(self, line: str) -> None:
        if self._file is None:
            if self.to_file:
                self._pending.append(line)
            return
        self._file.write(line + "\n")
        self._file.flush()

    def file_only(self, message: str) -> None:
        """Details (a traceback) for train.log that would only clutter the console."""
        self._append(message)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar:
    """Steps done out of max_iters, with rate and ETA; shows loss and lr as a postfix. Drawn on
    stderr, and only when stderr is a terminal."""

    def __init__(self, start: int, total: int, *, enabled: bool) -> None:
        shown = enabled and is_terminal(sys.stderr)
        self._bar = tqdm(total=total, initial=start, disable=not shown, unit="step",
                         dynamic_ncols=True, file=sys.stderr, mininterval=0.5, smoothing=0.1)

    def update(self, n: int = 1, **postfix: float) -> None:
        try:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()},
                                      refresh=False)
        except (OSError, ValueError):  # the terminal went away: the log lines go on
            self._bar.disable = True

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._bar.close()
