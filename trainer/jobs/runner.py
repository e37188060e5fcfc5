"""A job's process: its command line, starting it, recognising it later, and what its end means.

    argv = job_command(plan, job_dir, parent=os.getpid(), start="resume", max_iters=400)
    proc = spawn(argv, job_dir)              # its own session; output to <job>/output.log
    state, reason = outcome(ending)          # SUCCEEDED / FAILED / CANCELLED / INTERRUPTED

One rank runs `python -m trainer.cli --config <job>/job_config.json`, more run it under
`python -m trainer.launch` (torchrun that stops all ranks cleanly on SIGTERM), both behind
trainer/jobs/child.py. gpt-train is called exactly as a user would call it; its events.jsonl,
exit code and one-line errors tell the job's outcome.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trainer
from nanollm.checkpoint import TRAINER_STATE_FILE
from trainer.jobs.events import JobHistory
from trainer.jobs.spec import JobPlan
from trainer.jobs.store import CONFIG_FILE, OUTPUT_FILE, JobState
from trainer.model_init import LATEST

# Set by torchrun for its ranks: a job must not inherit them from a server started under it.
_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
             "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
_ERROR_LINE = re.compile(r"^(?:[\w.-]+: )?error: (.+)$")
# The package root, so `python -m trainer.cli` imports this code from any working directory.
_SOURCE_ROOT = str(Path(trainer.__file__).resolve().parent.parent)


STARTS = {"new": "started", "resume": "resuming from its latest checkpoint",
          "over": "starting over"}


def can_resume(job_dir: Path) -> bool:
    """Whether the job saved a checkpoint that `gpt-train --init-from resume` continues."""
    return (job_dir / LATEST / TRAINER_STATE_FILE).is_file()


def start_kind(resume: bool, job_dir: Path) -> str:
    """"new" for a first run; a resumed job continues ("resume") or, never having saved a
    checkpoint, starts over ("over")."""
    if not resume:
        return "new"
    return "resume" if can_resume(job_dir) else "over"


def job_command(plan: JobPlan, job_dir: Path, *, python: str, parent: int, start: str,
                max_iters: int, allow_private_urls: bool) -> list[str]:
    """argv of one run of the job. `start`: "new" (the first run), "resume" (from latest/) or
    "over" (a resumed job that never saved a checkpoint starts again from the beginning)."""
    child = [python, "-m", "trainer.jobs.child", "--parent", str(parent)]
    if plan.data.kind == "url":
        assert plan.data.url is not None
        child += ["--download", plan.data.url, "--to", plan.data.data_path(job_dir),
                  "--max-bytes", str(plan.data.max_bytes)]
        if allow_private_urls:
            child.append("--allow-private")
    train = ["-m", "trainer.cli", "--config", str(job_dir / CONFIG_FILE),
             "--max-iters", str(max_iters)]
    if start == "resume":
        train += ["--init-from", "resume"]
    elif start == "over":
        train.append("--overwrite")
    if plan.ranks > 1:
        command = [python, "-m", "trainer.launch", "--standalone",
                   f"--nproc_per_node={plan.ranks}", *train]
    else:
        command = [python, *train]
    return [*child, "--", *command]


def spawn(argv: list[str], job_dir: Path, header: str) -> subprocess.Popen[bytes]:
    """Start the job's process in its own session (a Ctrl-C meant for the server does not reach
    it), with stdout and stderr appended to output.log after a `header` line."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    with open(job_dir / OUTPUT_FILE, "ab") as out:
        out.write(f"== {header}: {shlex.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(argv, cwd=job_dir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "pid (command name)" (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def is_alive(pid: int, start: int | None) -> bool:
    """Whether `pid` still runs and is the process that started at `start` (not a reused pid,
    not a zombie that nobody has reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: the pid was reused
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: the pid is all there is to go by
    if fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


class JobProcess:
    """A job's top process: one this server started, or one adopted from an earlier server
    (known by its pid and start time only, so its exit code is not known)."""

    def __init__(self, pid: int, start_time: int | None,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.start_time = start_time
        self._popen = popen

    @classmethod
    def start(cls, argv: list[str], job_dir: Path, header: str) -> JobProcess:
        popen = spawn(argv, job_dir, header)
        return cls(popen.pid, process_start_time(popen.pid), popen)

    @property
    def adopted(self) -> bool:
        return self._popen is None

    def ended(self) -> tuple[bool, int | None]:
        """(whether it has ended, its exit status when known)."""
        if self._popen is not None:
            returncode = self._popen.poll()
            return returncode is not None, returncode
        return not is_alive(self.pid, self.start_time), None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL one this server started (gpt-train under it dies with it); leave an adopted
        one alone, for the next server to follow."""
        if self._popen is not None and self._popen.poll() is None:
            self.signal(signal.SIGKILL)
            self._popen.wait()


def wait_until_ended(processes: list[JobProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.ended()[0] for p in processes):
        time.sleep(0.05)


@dataclass
class Ending:
    """How a job's process ended. `returncode` is None when it is not known (the process
    belonged to an earlier server)."""

    returncode: int | None
    history: JobHistory
    output_tail: list[str]
    cancel_requested: bool
    why_gone: str | None  # "the server shut down" / "the server restarted", when that is why
    job_id: str


def outcome(end: Ending) -> tuple[JobState, str]:
    """The job's state after its process ended, and the reason shown to clients."""
    h, rc = end.history, end.returncode
    step = h.step
    latest = h.checkpoints.get("latest")
    saved = (f"; {end.job_id}/latest holds step {latest['step']}" if latest else
             "; it saved no checkpoint")
    if end.cancel_requested:
        return JobState.CANCELLED, f"cancelled by CancelJob at step {step}{saved}"
    completed = h.end is not None and h.end.get("reason") in ("completed", "eval_only")
    if completed and rc in (0, None):
        best = h.best_val_loss
        loss = f"; best val loss {best:.4f}" if best is not None and math.isfinite(best) else ""
        return JobState.SUCCEEDED, f"trained to step {step}{loss}"
    failure = _failure(end)
    if failure is not None:
        return JobState.FAILED, failure
    why = end.why_gone or _stopped_by(rc, h)
    next_step = ("ResumeJob continues it from there" if latest else
                 "ResumeJob starts it over")
    return JobState.INTERRUPTED, f"{why} at step {step}{saved}; {next_step}"


def _failure(end: Ending) -> str | None:
    """The error that ended the job, or None when it was stopped rather than failed."""
    rc, h = end.returncode, end.history
    error_type = (h.error or {}).get("error_type")
    interrupted = error_type in ("KeyboardInterrupt", "SystemExit")
    if rc is None:
        if h.error is not None and not interrupted:
            return str(h.error.get("message") or error_type)
        return None
    if rc == 0 or rc >= 128 or rc < 0 or (end.why_gone is not None and rc != 2):
        return None  # a signal stopped it (128 + n: caught signal n; < 0: killed by it)
    for line in reversed(end.output_tail):
        match = _ERROR_LINE.match(line.strip())
        if match:
            return match.group(1)
    if h.error is not None and not interrupted:
        return str(h.error.get("message") or error_type)
    last = next((line for line in reversed(end.output_tail) if line.strip()), "")
    return f"its process exited with code {rc}" + (f": {last.strip()}" if last else "")


def _stopped_by(rc: int | None, history: JobHistory) -> str:
    if rc == 130:  # gpt-train: a signal during setup
        return "its process was stopped before training began"
    signal_name = (history.end or {}).get("signal")
    if rc is not None and (rc < 0 or rc > 128):
        number = -rc if rc < 0 else rc - 128
        try:
            signal_name = signal.Signals(number).name
        except ValueError:
            signal_name = f"signal {number}"
    return f"its process was stopped by {signal_name}" if signal_name else \
        "its process ended without finishing"

