"""The top process of a job: tied to the server, it fetches the job's URL, then runs gpt-train.

    python -m trainer.jobs.child --parent 4242 \\
        [--download URL --to FILE --max-bytes N [--allow-private]] -- python -m trainer.cli ...

This small process (no torch) stays between the server and gpt-train (or torchrun) so that the
server's end reaches gpt-train exactly once. On Linux the kernel signals it when the server dies
(prctl PR_SET_PDEATHSIG), also when the server is killed outright (SIGKILL, OOM). That signal can
come several times, once per server thread as they die, and a second SIGTERM would make
gpt-train stop at once instead of saving; so it arrives here as SIGUSR1 and is passed on as one
SIGTERM: gpt-train finishes its step, saves `latest/` and exits, and the restarted server finds
the job INTERRUPTED and resumable. SIGTERM and SIGINT sent to this process (CancelJob, server
shutdown) are passed on each time, so a second CancelJob stops gpt-train at once. gpt-train in
turn gets SIGKILL if this process is killed. This process ends with gpt-train's exit status.

The URL source, if any, is downloaded first through nanollm's guarded opener (size limit;
loopback, private, link-local and metadata addresses refused on every connection and redirect
unless --allow-private). A failed download prints one `error:` line and exits 2.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1
PARENT_DIED = signal.SIGUSR1


def parent_death_signal() -> Callable[[int], None]:
    """A function asking the kernel for a signal when the calling process's parent dies (Linux;
    elsewhere it does nothing). libc is looked up here, so the function itself is safe to call
    between fork and exec."""
    if not sys.platform.startswith("linux"):
        return lambda sig: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda sig: prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


class Relay:
    """Passes the signals this process gets on to gpt-train (see the module docstring)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.sent = 0  # SIGTERM/SIGINT passed on so far

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        signal.signal(PARENT_DIED, self._parent_died)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:  # still downloading: stop here
            raise SystemExit(128 + signum)
        self.sent += 1
        self.child.send_signal(signum)

    def _parent_died(self, signum: int, frame: FrameType | None) -> None:
        if self.sent == 0:  # once: a stop already asked for is not made more urgent
            self._forward(signal.SIGTERM, frame)


def download(url: str, dest: Path, max_bytes: int, allow_private: bool) -> None:
    """Fetch `url` into `dest` unless an earlier run of the job already did."""
    from nanollm.text_sources import fetch_url

    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetch_url(url, part, timeout=30.0, max_bytes=max_bytes, show_progress=False,
              allow_private=allow_private)
    os.replace(part, dest)


def exit_like(returncode: int) -> int:
    """Exit with gpt-train's status: its exit code, or death by the same signal."""
    if returncode < 0:
        sig = -returncode
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return returncode if returncode >= 0 else 128 - returncode


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args_in:
        print("error: the command to run comes after --", file=sys.stderr)
        return 2
    split = args_in.index("--")
    parser = argparse.ArgumentParser(prog="python -m trainer.jobs.child")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--download")
    parser.add_argument("--to", type=Path)
    parser.add_argument("--max-bytes", type=int, default=1 << 30)
    parser.add_argument("--allow-private", action="store_true")
    args = parser.parse_args(args_in[:split])
    relay = Relay()
    relay.install()
    on_parent_death = parent_death_signal()
    on_parent_death(PARENT_DIED)
    if os.getppid() != args.parent:  # the server died before the line above took effect
        return 128 + signal.SIGTERM
    if args.download:
        from nanollm.dataset import DataError

        try:
            download(args.download, args.to, args.max_bytes, args.allow_private)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    sys.stdout.flush()
    relay.child = subprocess.Popen(args_in[split + 1:],
                                   preexec_fn=lambda: on_parent_death(signal.SIGKILL))
    return exit_like(relay.child.wait())


if __name__ == "__main__":
    sys.exit(main())
