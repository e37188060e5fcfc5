"""Graceful stop on SIGTERM / Ctrl-C: finish the current step, save `latest/`, exit cleanly.

The first signal only sets a flag that the loop reads between steps; a second one restores the
default handler's behaviour (KeyboardInterrupt / termination) for a user who insists.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class GracefulStop:
    """Context manager installing SIGINT/SIGTERM handlers (main thread only; else a no-op)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:  # second signal: give up waiting
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)  # type: ignore[arg-type]
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()
