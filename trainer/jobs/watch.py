"""One WatchJob stream: a snapshot, then every new event, until the job has ended.

    watch = JobWatch(manager, job_id, include_logs=True)
    yield watch.snapshot()
    while not watch.finished:
        for message in watch.poll(): yield message
        await asyncio.sleep(POLL_S)

Each watch reads the job's files with its own offsets (trainer/jobs/events.py), so watchers are
independent of each other and of the job: one that stops polling costs nothing but its memory.
The snapshot covers the files up to where it read them and the live events start exactly
there, so a step is never missed or sent twice. Within one poll the job's state is read before
its files: when a process has ended, its files are complete, so every event of a run comes
before the state change that ends it.
"""

from __future__ import annotations

from nanollm.v1 import train_pb2
from trainer.jobs.events import FileTail, JobProgress
from trainer.jobs.manager import JobManager
from trainer.jobs.store import OUTPUT_FILE
from trainer.jobs.views import eval_pb, event_pb, log_pb, state_pb, step_pb

POLL_S = 0.2  # seconds between a watch's looks at the job's files
RECENT_LOGS = 20


class JobWatch:
    def __init__(self, manager: JobManager, job_id: str, *, include_logs: bool = True) -> None:
        self.manager = manager
        self.job_id = job_id
        self.include_logs = include_logs
        folder = manager.root / job_id
        manager.record(job_id)  # JobNotFoundError before anything else
        self.progress = JobProgress(folder)
        self.logs = FileTail(folder / OUTPUT_FILE)
        self.finished = False
        self._seen: tuple[int, str] | None = None

    def snapshot(self) -> train_pb2.WatchJobResponse:
        record = self.manager.record(self.job_id)
        self.progress.refresh()
        recent = self.logs.last_lines(RECENT_LOGS) if self.include_logs else []
        history = self.progress.history
        snapshot = train_pb2.JobSnapshot(
            job=self.manager.describe(self.job_id, self.progress),
            steps=[step_pb(e, record.max_iters) for e in history.steps],
            evals=[eval_pb(e) for e in history.evals],
            recent_logs=[log_pb(line) for line in recent])
        self._seen = (record.state.value, record.reason)
        self.finished = not record.state.active
        return train_pb2.WatchJobResponse(snapshot=snapshot)

    def poll(self) -> list[train_pb2.WatchJobResponse]:
        """What happened since the last poll (or the snapshot)."""
        record = self.manager.record(self.job_id)
        out = []
        for event in self.progress.refresh():
            message = event_pb(event, record.max_iters, self.manager.root)
            if message is not None:
                out.append(message)
        if self.include_logs:
            out += [train_pb2.WatchJobResponse(log=log_pb(line)) for line in self.logs.read()]
        if (record.state.value, record.reason) != self._seen:
            self._seen = (record.state.value, record.reason)
            out.append(state_pb(record, self.progress.history.step))
        self.finished = not record.state.active
        return out
