"""What the job manager reports to metrics: jobs per state, and each running job's progress."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from trainer.jobs.events import JobHistory
from trainer.jobs.store import JobState


class JobMetrics(Protocol):
    """The receiving end (server/metrics.py's ServerMetrics implements it)."""

    def set_jobs_by_state(self, counts: Mapping[str, int]) -> None: ...

    def set_job_progress(self, job_id: str, loss: float, tokens_per_second: float) -> None: ...

    def forget_job(self, job_id: str) -> None: ...


def report_states(metrics: JobMetrics | None, states: Iterable[JobState]) -> None:
    """Jobs per state, every state named (0 when none)."""
    if metrics is None:
        return
    counts = {state.name: 0 for state in JobState}
    for state in states:
        counts[state.name] += 1
    metrics.set_jobs_by_state(counts)


def report_progress(metrics: JobMetrics | None, job_id: str, history: JobHistory) -> None:
    """A running job's latest logged loss and throughput."""
    if metrics is None or not history.steps:
        return
    last = history.steps[-1]
    metrics.set_job_progress(job_id, float(last.get("loss") or 0.0),
                             float(last.get("tokens_per_sec") or 0.0))
