"""torchrun with a graceful stop: takes torchrun's arguments, exits 0 when Ctrl-C or SIGTERM
stopped every rank cleanly.

    python -m trainer.launch --standalone --nproc_per_node=4 -m trainer.cli --config ...

torchrun answers SIGINT and SIGTERM by forwarding the signal to its ranks (each in its own
session, so a terminal's Ctrl-C reaches only torchrun) and then raising `SignalException`: it
exits 1 with a traceback even when every rank finished its step, saved `latest/` and exited 0.
Here torchrun is left only SIGHUP and SIGQUIT; this process forwards SIGINT and SIGTERM to the
ranks itself and lets torchrun watch them finish, so the exit code is torchrun's usual one (0 when
every rank exited 0). A second signal is forwarded too: the ranks then stop at once.

On systems without /proc (to find the ranks) this is plain torchrun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType

# torchrun keeps handling these itself (forward, then fail).
TORCHRUN_SIGNALS = "SIGHUP,SIGQUIT"
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def child_pids() -> list[int]:
    """The running children of this process (torchrun's ranks), from /proc."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return pids


def forward(signum: int, frame: FrameType | None) -> None:
    for pid in child_pids():
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            os.kill(pid, signum)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.run import main as torchrun

    args = list(sys.argv[1:] if argv is None else argv)
    if Path("/proc/self/task").is_dir():
        for sig in FORWARDED:
            signal.signal(sig, forward)
        args = ["--signals-to-handle", TORCHRUN_SIGNALS, *args]  # a user's own choice wins
    torchrun(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
