"""SIGTERM ends a long write the way Ctrl-C does: by an exception, so its cleanup runs.

    with sigterm_raises("data preparation"):
        ...write into a temp folder; `finally:` removes it...

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, so `finally` blocks run, but by default
SIGTERM (what `kill`, `timeout`, torchrun and job schedulers send) ends the process at once,
leaving half-written temp folders and no message. Inside `sigterm_raises` a SIGTERM raises
`Terminated`, a KeyboardInterrupt, so code and command-line tools that already handle Ctrl-C
handle it too. A second SIGTERM during the cleanup ends the process as usual.

The handler is installed only in the main thread (Python delivers signals there) and only while
SIGTERM has its default action: a program that installed its own handler keeps it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """Raised inside `sigterm_raises` when the process receives SIGTERM."""


@contextlib.contextmanager
def sigterm_raises(what: str) -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated("<what> stopped by SIGTERM")."""
    if threading.current_thread() is not threading.main_thread() or (
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one is not caught
        raise Terminated(f"{what} stopped by SIGTERM")

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
