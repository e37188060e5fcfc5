"""The jobs root on disk: one folder per job, readable whatever moment a crash came.

    <jobs_root>/
      .lock                      held by the one server using this root
      20261202-142501-3fa9c1/    a job (its id)
        spec.json                the spec and the plan made from it; written once
        state.json               state, reason, times, process id; replaced atomically
        job_config.json          the --config file of the job's gpt-train; written once
        output.log               the job's console output (stdout and stderr)
        data/                    uploaded or downloaded text and the prepared dataset
        events.jsonl train.log train_config.yaml latest/ best/     written by gpt-train

A job folder appears complete or not at all: it is written as a hidden temp folder and renamed
into place (nanollm.atomic_dir). state.json is replaced by rename, so a reader sees the old or the
new state, never half of one. Hidden entries are never jobs; what a killed server left of them
(temp folders, folders being deleted) is removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from nanollm.atomic_dir import finish_files, make_temp_dir, replace_dir_atomically
from nanollm.v1 import train_pb2
from trainer.jobs.errors import SpecError
from trainer.jobs.spec import DataPlan, JobPlan

SPEC_FILE = "spec.json"
STATE_FILE = "state.json"
CONFIG_FILE = "job_config.json"
OUTPUT_FILE = "output.log"
LOCK_FILE = ".lock"
JOB_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")
SPEC_VERSION = 1


class JobState(enum.Enum):
    QUEUED = train_pb2.JOB_STATE_QUEUED
    RUNNING = train_pb2.JOB_STATE_RUNNING
    SUCCEEDED = train_pb2.JOB_STATE_SUCCEEDED
    FAILED = train_pb2.JOB_STATE_FAILED
    CANCELLED = train_pb2.JOB_STATE_CANCELLED
    INTERRUPTED = train_pb2.JOB_STATE_INTERRUPTED

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


def new_job_id() -> str:
    """Sortable by creation time (UTC, to the second), unique by its random tail."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class JobRecord:
    """What state.json holds: the job's state and its process's identity."""

    job_id: str
    name: str
    state: JobState
    reason: str
    created_at: float
    max_iters: int
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    runs: int = 0
    pid: int | None = None
    pid_start: int | None = None  # the process's start time, so a reused pid is not taken for it
    cancel_requested: bool = False
    resume: bool = False  # the next start continues from latest/
    loaded_model: str = ""
    uploaded_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.name
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = JobState[values["state"]]
        return cls(**values)


def plan_to_json(plan: JobPlan) -> dict[str, Any]:
    return {
        "version": SPEC_VERSION,
        "spec": json_format.MessageToDict(plan.spec, preserving_proto_field_name=True),
        "train": plan.train,
        "data": {"kind": plan.data.kind, "path": plan.data.path, "url": plan.data.url,
                 "max_bytes": plan.data.max_bytes},
        "ranks": plan.ranks,
        "model_name": plan.model_name,
    }


def plan_from_json(data: dict[str, Any]) -> JobPlan:
    spec = json_format.ParseDict(data["spec"], train_pb2.JobSpec())
    return JobPlan(spec=spec, train=data["train"], data=DataPlan(**data["data"]),
                   ranks=int(data["ranks"]), model_name=data["model_name"])


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write, flush to disk, then rename over `path`: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself durable (not every OS allows it)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class JobsRootBusyError(RuntimeError):
    """Another server already uses this jobs root."""


class JobStore:
    """The jobs root: lock it, create, read, update and delete job folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock: IO[str] | None = None

    def open(self) -> None:
        """Create the root if needed and lock it (one server per root: two would both run
        the queued jobs); then remove what a killed server left half-written."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / LOCK_FILE, "a", encoding="utf-8")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise JobsRootBusyError(f"jobs root {self.root} is in use by another server; give "
                                    "each server its own --jobs-root") from None
        self._lock = lock
        for entry in self.root.iterdir():
            if entry.name.startswith(".") and entry.name != LOCK_FILE and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def path(self, job_id: str) -> Path:
        """The folder of a job id (only server-made ids name folders)."""
        if not JOB_ID.fullmatch(job_id):
            raise SpecError([("job_id", f"{job_id!r} is not a job id; job ids look like "
                                        "20261202-142501-3fa9c1")])
        return self.root / job_id

    def create(self, record: JobRecord, plan: JobPlan) -> Path:
        """The job's folder, complete (spec, state, gpt-train config, uploaded text) or absent."""
        final = self.root / record.job_id
        tmp = make_temp_dir(final)
        try:
            write_json_atomically(tmp / SPEC_FILE, plan_to_json(plan))
            write_json_atomically(tmp / CONFIG_FILE, plan.trainer_config(final))
            if plan.data.text is not None:
                (tmp / "data").mkdir()
                (tmp / "data" / Path(plan.data.data_path(final)).name).write_bytes(
                    plan.data.text)
            write_json_atomically(tmp / STATE_FILE, record.to_json())
            finish_files(tmp)
            replace_dir_atomically(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def save(self, record: JobRecord) -> None:
        write_json_atomically(self.root / record.job_id / STATE_FILE, record.to_json())

    def load_all(self) -> list[tuple[JobRecord, JobPlan]]:
        """Every job folder's record and plan, oldest first; unreadable folders are skipped
        (a folder that is not a job, or one a person damaged) with the reason returned."""
        jobs = []
        for entry in sorted(self.root.iterdir()):
            if not (entry.is_dir() and JOB_ID.fullmatch(entry.name)):
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError,
                                     json_format.ParseError):
                record = JobRecord.from_json(_read(entry / STATE_FILE))
                plan = plan_from_json(_read(entry / SPEC_FILE))
                if record.job_id == entry.name:
                    jobs.append((record, plan))
        return sorted(jobs, key=lambda job: job[0].created_at)

    def delete(self, job_id: str) -> None:
        """Rename the folder aside (it is gone for readers at once), then remove it."""
        folder = self.path(job_id)
        doomed = self.root / f".{job_id}.deleting-{secrets.token_hex(3)}"
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data
