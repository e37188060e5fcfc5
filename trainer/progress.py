"""Human-facing output of a run: the console progress bar (tqdm, with ETA) and `train.log`.

Only rank 0 creates a visible bar and writes the log; other ranks get a silent one. Log lines go
through `tqdm.write`, so they print above the bar instead of tearing it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

from tqdm import tqdm

LOG_FILE = "train.log"


class RunLog:
    """Prints lines on the console and appends them, time-stamped, to `<out_dir>/train.log`."""

    def __init__(self, out_dir: str | Path | None, *, console: bool = True) -> None:
        self.console = console
        self._file: IO[str] | None = None
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            self._file = (Path(out_dir) / LOG_FILE).open("a", encoding="utf-8")

    def info(self, message: str) -> None:
        if self.console:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()
        if self._file is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._file.write(f"{stamp} {message}\n")
            self._file.flush()

    def file_only(self, message: str) -> None:
        """Details (a traceback) for train.log that would only clutter the console."""
        if self._file is not None:
            self._file.write(message + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar:
    """Steps done out of max_iters, with rate and ETA; shows loss and lr as a postfix."""

    def __init__(self, start: int, total: int, *, enabled: bool) -> None:
        self._bar = tqdm(total=total, initial=start, disable=not enabled, unit="step",
                         dynamic_ncols=True, file=sys.stderr, mininterval=0.5, smoothing=0.1)

    def update(self, n: int = 1, **postfix: float) -> None:
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        self._bar.close()
