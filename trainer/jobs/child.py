"""The first program of a job's process: tie it to the server, fetch its URL, then become gpt-train.

    python -m trainer.jobs.child --parent 4242 \\
        [--download URL --to FILE --max-bytes N [--allow-private]] -- python -m trainer.cli ...

On Linux the process asks the kernel for SIGTERM when the server's thread that started it dies
(prctl PR_SET_PDEATHSIG; it survives the exec below). So a server killed outright (SIGKILL, OOM)
still stops its jobs the graceful way: gpt-train finishes its step, saves `latest/` and exits,
and the restarted server finds the job INTERRUPTED and resumable. Then the URL source, if any, is
downloaded through nanollm's guarded opener (size limit; loopback, private, link-local and
metadata addresses refused on every connection and redirect unless --allow-private), and the
process replaces itself (exec) with the command after `--`, keeping its pid, which the server
signals to cancel the job. A failed download prints one `error:` line and exits 2.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGTERM when the parent goes away (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the server died before the line above took effect
        sys.exit(143)


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
    command = args_in[split + 1:]
    die_with_parent(args.parent)
    if args.download:
        from nanollm.dataset import DataError

        try:
            download(args.download, args.to, args.max_bytes, args.allow_private)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    sys.stdout.flush()
    os.execvp(command[0], command)
    return 0  # not reached: exec replaced this program


if __name__ == "__main__":
    sys.exit(main())
