"""Jobs and their events as nanollm.v1 messages (the domain -> protobuf half of TrainService)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from nanollm.v1 import train_pb2
from trainer.jobs.events import JobHistory, cut
from trainer.jobs.spec import JobPlan
from trainer.jobs.store import JobRecord
from trainer.model_init import BEST, LATEST


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


def step_pb(event: dict[str, Any], max_iters: int) -> train_pb2.StepMetrics:
    step = int(event["step"])
    step_ms = _number(event.get("step_time_ms"))
    pb = train_pb2.StepMetrics(
        step=step, loss=_number(event.get("loss")), lr=_number(event.get("lr")),
        grad_norm=_number(event.get("grad_norm")),
        tokens_per_second=_number(event.get("tokens_per_sec")), step_time_ms=step_ms,
        tokens=int(_number(event.get("tokens"))),
        eta_seconds=max(0, max_iters - step) * step_ms / 1000,
        time=timestamp(_number(event.get("time"))))
    mfu = event.get("mfu")
    if isinstance(mfu, int | float) and math.isfinite(mfu):
        pb.mfu = float(mfu)
    return pb


def eval_pb(event: dict[str, Any]) -> train_pb2.EvalResult:
    return train_pb2.EvalResult(
        step=int(event["step"]), train_loss=_number(event.get("train_loss")),
        val_loss=_number(event.get("val_loss")),
        best_val_loss=_number(event.get("best_val_loss")),
        improved=bool(event.get("improved")), time=timestamp(_number(event.get("time"))))


def checkpoint_pb(event: dict[str, Any], jobs_root: Path) -> train_pb2.CheckpointSaved:
    path = Path(str(event.get("path", "")))
    try:
        shown = path.resolve().relative_to(jobs_root.resolve()).as_posix()
    except ValueError:
        shown = path.name
    pb = train_pb2.CheckpointSaved(step=int(event["step"]), kind=str(event.get("kind", "")),
                                   path=shown, time=timestamp(_number(event.get("time"))))
    val = event.get("val_loss")
    if isinstance(val, int | float) and math.isfinite(val):
        pb.val_loss = float(val)
    return pb


def event_pb(event: dict[str, Any], max_iters: int, jobs_root: Path
             ) -> train_pb2.WatchJobResponse | None:
    """The watch message of a gpt-train event; None for events a watcher gets otherwise
    (start, end and error show as state changes and log lines)."""
    kind = event["type"]
    if kind == "step":
        return train_pb2.WatchJobResponse(step=step_pb(event, max_iters))
    if kind == "eval":
        return train_pb2.WatchJobResponse(eval=eval_pb(event))
    if kind == "checkpoint":
        return train_pb2.WatchJobResponse(checkpoint=checkpoint_pb(event, jobs_root))
    return None


def log_pb(line: str) -> train_pb2.LogLine:
    return train_pb2.LogLine(text=cut(line), time=timestamp(time.time()))


def state_pb(record: JobRecord, step: int) -> train_pb2.WatchJobResponse:
    return train_pb2.WatchJobResponse(state_change=train_pb2.StateChange(
        state=record.state.value, reason=record.reason, step=step,
        time=timestamp(time.time())))


def checkpoint_folder(job_dir: Path) -> Path | None:
    """The checkpoint a job's model comes from: best/, else latest/ (None while neither)."""
    for name in (BEST, LATEST):
        if (job_dir / name).is_dir():
            return job_dir / name
    return None


def job_pb(record: JobRecord, plan: JobPlan, history: JobHistory, job_dir: Path,
           queue_position: int = 0) -> train_pb2.Job:
    pb = train_pb2.Job(
        job_id=record.job_id, name=record.name, state=record.state.value, reason=record.reason,
        spec=plan.spec, created_at=timestamp(record.created_at), step=history.step,
        max_iters=record.max_iters, queue_position=queue_position, runs=record.runs,
        loaded_model=record.loaded_model, uploaded_bytes=record.uploaded_bytes)
    if record.started_at is not None:
        pb.started_at.CopyFrom(timestamp(record.started_at))
    if record.ended_at is not None:
        pb.ended_at.CopyFrom(timestamp(record.ended_at))
    if history.steps:
        pb.last_step.CopyFrom(step_pb(history.steps[-1], record.max_iters))
    if history.evals:
        pb.last_eval.CopyFrom(eval_pb(history.evals[-1]))
    best = history.best_val_loss
    if best is not None:
        pb.best_val_loss = best
    folder = checkpoint_folder(job_dir)
    if folder is not None:
        pb.checkpoint = f"{record.job_id}/{folder.name}"
    return pb
