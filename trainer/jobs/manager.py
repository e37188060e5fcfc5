"""The jobs of one jobs root: a bounded number running as child processes, the rest queued.

    manager = JobManager(JobsSettings(root=Path("jobs"), limits=limits), rules, metrics=m)
    manager.start()                                  # lock the root, recover, supervise
    job = manager.start_job(spec)                    # validated, folder made, QUEUED
    manager.cancel(job.job_id); manager.resume(job.job_id)
    manager.shutdown(grace=30)                       # running jobs save and stop: INTERRUPTED

One long-lived supervisor thread starts the oldest QUEUED jobs while fewer than
`max_concurrent` run, notices processes that ended, records what their end means
(trainer/jobs/runner.py) and reports metrics. On Linux a job's process is told when the thread
that started it dies (trainer/jobs/child.py), so every job is started from that one thread.

The jobs root is made by the first StartJob and locked by the manager using it; another
server's root makes every call UNAVAILABLE (models are still served). On start, jobs an earlier
server left RUNNING are settled: a process that is gone makes its job INTERRUPTED (or SUCCEEDED
/ FAILED when its events say it got that far); one still alive is followed until it ends.
QUEUED jobs stay queued, in order.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nanollm.checkpoint import is_checkpoint_dir
from nanollm.config import TrainingConfig
from nanollm.v1 import train_pb2
from trainer.jobs import runner
from trainer.jobs.errors import JobNotFoundError, JobStateError, JobsUnavailableError, SpecError
from trainer.jobs.events import FileTail, JobProgress
from trainer.jobs.reporting import JobMetrics, report_progress, report_states
from trainer.jobs.spec import JobPlan, SpecLimits, SpecRules, preflight, validate_spec
from trainer.jobs.store import (
    OUTPUT_FILE,
    JobRecord,
    JobsRootBusyError,
    JobState,
    JobStore,
    new_job_id,
)
from trainer.jobs.views import checkpoint_folder, job_pb

log = logging.getLogger(__name__)

DEFAULT_MAX_ITERS: int = TrainingConfig.__dataclass_fields__["max_iters"].default
OUTPUT_TAIL = 40  # lines of output.log read to explain how a process ended
GONE = "the server stopped while the job ran"


@dataclass(frozen=True)
class JobsSettings:
    root: Path
    limits: SpecLimits
    max_concurrent: int = 1
    poll_interval: float = 0.25  # seconds between the supervisor's looks at the processes
    python: str = sys.executable


@dataclass(eq=False)
class _Job:
    record: JobRecord
    plan: JobPlan
    progress: JobProgress
    process: runner.JobProcess | None = None  # while RUNNING


class JobManager:
    """See the module docstring. Every public method is thread-safe. `on_succeeded(job_id,
    model_name, checkpoint)` runs (on the supervisor thread, so it must not block) when a job
    with load_when_done SUCCEEDS."""

    def __init__(self, settings: JobsSettings, rules: SpecRules, *,
                 metrics: JobMetrics | None = None,
                 on_succeeded: Callable[[str, str, Path], None] | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.on_succeeded = on_succeeded
        self.store = JobStore(settings.root)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = False
        self._opened = False
        self._unusable: str | None = None  # why the jobs root cannot be used
        self._grace = 0.0
        self._thread: threading.Thread | None = None

    @property
    def root(self) -> Path:
        return self.settings.root

    # ------------------------------------------------------------------------------------------
    # life cycle

    def start(self) -> None:
        """Open an existing jobs root (settling what an earlier server left) and start
        supervising."""
        with self._lock:
            if self.root.exists():
                self._open()
        self._thread = threading.Thread(target=self._supervise, name="job-supervisor",
                                        daemon=True)
        self._thread.start()

    def shutdown(self, grace: float) -> None:
        """Stop taking work; running jobs get SIGTERM (they finish their step and save) and
        `grace` seconds, then SIGKILL; they become INTERRUPTED. Queued jobs stay queued."""
        with self._lock:
            if self._closing:
                return
            self._closing, self._grace = True, grace
        self._wake.set()
        if self._thread is not None:
            self._thread.join(grace + 30)
        self.store.close()

    def _open(self) -> None:
        """Lock the jobs root (creating it) and load its jobs; called with the lock held."""
        try:
            self.store.open()
        except (JobsRootBusyError, OSError) as exc:
            self._unusable = f"training jobs are unavailable: {exc}"
            log.warning("%s", self._unusable)
            return
        self._opened = True
        for record, plan in self.store.load_all():
            job = _Job(record, plan, JobProgress(self.root / record.job_id))
            job.progress.refresh()
            self._jobs[record.job_id] = job
            if record.state is JobState.RUNNING:
                self._recover(job)

    def _recover(self, job: _Job) -> None:
        """A job an earlier server left RUNNING. Its process is usually gone or stopping (it got
        SIGTERM when that server died; see child.py); one still alive is followed until it
        ends (signalling it again would cut its checkpoint save short)."""
        r = job.record
        if r.pid is not None and runner.is_alive(r.pid, r.pid_start):
            job.process = runner.JobProcess(r.pid, r.pid_start)
            r.reason = f"still running: its process (pid {r.pid}) outlived the previous server"
            self.store.save(r)
            log.warning("job %s: %s", r.job_id, r.reason)
        else:
            self._finish(job, None, why_gone=GONE)

    # ------------------------------------------------------------------------------------------
    # the API

    def start_job(self, spec: train_pb2.JobSpec) -> train_pb2.Job:
        """Validate `spec` whole (SpecError lists every bad field), then make the job's folder
        and queue it. Nothing is written for a spec that fails."""
        self._refuse_when_unavailable()
        plan = validate_spec(spec, self.settings.limits, self.rules, self.checkpoint_of)
        preflight(plan, self.root / new_job_id())  # a folder that does not exist yet
        with self._lock:
            if not self._opened and not self._closing:
                self._open()
            self._refuse_when_unavailable()
            job_id = new_job_id()
            while (self.root / job_id).exists():  # the same second and random tail
                job_id = new_job_id()
            if plan.model_name == "":
                plan.model_name = job_id
            now = time.time()
            record = JobRecord(
                job_id=job_id, name=spec.name, state=JobState.QUEUED,
                reason="waiting for a slot", created_at=now, queued_at=now,
                max_iters=int(plan.train.get("max_iters", DEFAULT_MAX_ITERS)),
                uploaded_bytes=len(plan.data.text or b""))
            self.store.create(record, plan)
            plan.data.text = None  # on disk now; not kept in memory
            job = _Job(record, plan, JobProgress(self.root / job_id))
            self._jobs[job_id] = job
            log.info("job %s: queued (%s)", job_id, record.name or "no name")
            pb = self._pb(job)
        self._wake.set()
        return pb

    def get(self, job_id: str) -> train_pb2.Job:
        with self._lock:
            job = self._job(job_id)
            job.progress.refresh()
            return self._pb(job)

    def list(self, states: Iterable[int] = ()) -> list[train_pb2.Job]:
        wanted = set(states)
        with self._lock:
            if self._unusable is not None:
                raise JobsUnavailableError(self._unusable, "unavailable")
            jobs = [j for j in self._jobs.values()
                    if not wanted or j.record.state.value in wanted]
            for job in jobs:
                job.progress.refresh()
            return [self._pb(j) for j in jobs]

    def cancel(self, job_id: str) -> train_pb2.Job:
        """QUEUED: CANCELLED now. RUNNING: SIGTERM, so gpt-train saves and stops (CANCELLED
        once it has); a second cancel sends another SIGTERM, which stops it at once."""
        with self._lock:
            job = self._job(job_id)
            r = job.record
            if r.state is JobState.QUEUED:
                self._set_state(job, JobState.CANCELLED, "cancelled by CancelJob while queued")
            elif r.state is JobState.RUNNING:
                if job.process is not None:
                    job.process.signal(signal.SIGTERM)
                r.reason = ("stopping at once: CancelJob was called again" if r.cancel_requested
                            else "stopping: CancelJob asked it to finish its step and save")
                r.cancel_requested = True
                self.store.save(r)
            else:
                raise JobStateError(f"job {job_id} has already ended ({r.state.name}); "
                                    "DeleteJob removes it")
            return self._pb(job)

    def resume(self, job_id: str, max_iters: int | None = None) -> train_pb2.Job:
        """Queue an ended job again; it continues from latest/ (or starts over without one)."""
        self._refuse_when_unavailable()
        with self._lock:
            job = self._job(job_id)
            r = job.record
            job.progress.refresh()
            if r.state.active:
                raise JobStateError(f"job {job_id} is {r.state.name}; only a job that has "
                                    "ended can be resumed")
            step = self._resume_step(job)
            if max_iters is not None and max_iters <= step:
                raise SpecError([("max_iters", f"must be more than the {step} steps the job "
                                               f"resumes from, got {max_iters}")])
            target = max_iters or r.max_iters
            if r.state is JobState.SUCCEEDED and target <= step:
                raise JobStateError(f"job {job_id} has trained all its {step} steps; give a "
                                    "larger max_iters to train it longer")
            r.max_iters, r.resume, r.queued_at = target, True, time.time()
            how = (f"resume from step {step}" if runner.can_resume(self.root / job_id)
                   else "start over (it saved no checkpoint)")
            self._set_state(job, JobState.QUEUED, f"waiting for a slot, to {how}")
            pb = self._pb(job)
        self._wake.set()
        return pb

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._job(job_id)
            if job.record.state.active:
                raise JobStateError(f"job {job_id} is {job.record.state.name}; cancel it "
                                    "before deleting it")
            self.store.delete(job_id)
            del self._jobs[job_id]
            self._report_states()
            log.info("job %s: deleted", job_id)

    def checkpoint_of(self, job_id: str) -> Path:
        """The checkpoint a model is loaded or fine-tuned from: best/, else latest/."""
        with self._lock:
            job = self._job(job_id)
            if job.record.state.active:
                raise JobStateError(f"job {job_id} is {job.record.state.name}; its checkpoint "
                                    "can be used once it has ended (CancelJob stops it and "
                                    "saves)")
            folder = checkpoint_folder(self.root / job_id)
            if folder is None or not is_checkpoint_dir(folder):
                raise JobStateError(f"job {job_id} saved no checkpoint")
            return folder

    def note_loaded(self, job_id: str, model_name: str, error: str | None) -> None:
        """What became of load_when_done: the model's name, or why it did not load."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if error is None:
                job.record.loaded_model = model_name
            else:
                job.record.reason += f"; loading it as model {model_name!r} failed: {error}"
            self.store.save(job.record)

    # for watchers (trainer/jobs/watch.py)

    def record(self, job_id: str) -> JobRecord:
        with self._lock:
            return copy.copy(self._job(job_id).record)

    def describe(self, job_id: str, progress: JobProgress) -> train_pb2.Job:
        """The job as `progress` (a watcher's own reading of its events) sees it."""
        with self._lock:
            return self._pb(self._job(job_id), progress)

    # ------------------------------------------------------------------------------------------
    # helpers (called with the lock held)

    def _job(self, job_id: str) -> _Job:
        self.store.path(job_id)  # a malformed id: SpecError naming the format
        if self._unusable is not None:
            raise JobsUnavailableError(self._unusable, "unavailable")
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job {job_id!r} (ListJobs shows the jobs)")
        return job

    def _resume_step(self, job: _Job) -> int:
        """The step a resumed run starts from: its latest checkpoint's, not the last step logged
        (a process killed between checkpoints logged steps it never saved); 0 without one."""
        if not runner.can_resume(self.root / job.record.job_id):
            return 0
        history = job.progress.history
        latest = history.checkpoints.get("latest")
        return int(latest["step"]) if latest is not None else history.step

    def _pb(self, job: _Job, progress: JobProgress | None = None) -> train_pb2.Job:
        position = 0
        if job.record.state is JobState.QUEUED:
            position = self._queue().index(job)
        history = (progress or job.progress).history
        return job_pb(job.record, job.plan, history, self.root / job.record.job_id, position)

    def _queue(self) -> list[_Job]:
        queued = [j for j in self._jobs.values() if j.record.state is JobState.QUEUED]
        return sorted(queued, key=lambda j: j.record.queued_at or j.record.created_at)

    def _set_state(self, job: _Job, state: JobState, reason: str) -> None:
        job.record.state, job.record.reason = state, reason
        if not state.active:
            job.record.ended_at = time.time()
        self.store.save(job.record)
        self._report_states()

    def _refuse_when_unavailable(self) -> None:
        if self._closing:
            raise JobsUnavailableError("the server is shutting down; it takes no new jobs",
                                       "draining")
        if self._unusable is not None:
            raise JobsUnavailableError(self._unusable, "unavailable")

    # ------------------------------------------------------------------------------------------
    # the supervisor thread

    def _supervise(self) -> None:
        while True:
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()
            with self._lock:
                if self._closing:
                    break
                try:
                    self._tick()
                except Exception:  # one bad job folder must not stop the supervision of all
                    log.exception("job supervisor: unexpected error")
        self._stop_all()

    def _tick(self) -> None:
        for job in list(self._jobs.values()):
            if job.process is None:
                continue
            ended, returncode = job.process.ended()
            if ended:
                self._finish(job, returncode, GONE if job.process.adopted else None)
                continue
            job.progress.refresh()
            report_progress(self.metrics, job.record.job_id, job.progress.history)
        running = sum(j.record.state is JobState.RUNNING for j in self._jobs.values())
        for job in self._queue()[:max(0, self.settings.max_concurrent - running)]:
            self._launch(job)
        self._report_states()

    def _launch(self, job: _Job) -> None:
        r, folder = job.record, self.root / job.record.job_id
        start = runner.start_kind(r.resume, folder)
        argv = runner.job_command(job.plan, folder, python=self.settings.python,
                                  parent=os.getpid(), start=start, max_iters=r.max_iters,
                                  allow_private_urls=self.settings.limits.allow_private_urls)
        try:
            job.process = runner.JobProcess.start(argv, folder, f"run {r.runs + 1} ({start})")
        except OSError as exc:
            self._set_state(job, JobState.FAILED, f"its process could not start: {exc}")
            return
        r.pid, r.pid_start = job.process.pid, job.process.start_time
        r.runs, r.started_at, r.ended_at, r.cancel_requested = r.runs + 1, time.time(), None, False
        what = runner.STARTS[start]
        self._set_state(job, JobState.RUNNING, f"{what} (run {r.runs})")
        log.info("job %s: %s, pid %d", r.job_id, what, r.pid)

    def _finish(self, job: _Job, returncode: int | None, why_gone: str | None = None) -> None:
        """Record how a job's process ended."""
        r = job.record
        job.progress.refresh()
        tail = FileTail(self.root / r.job_id / OUTPUT_FILE).last_lines(OUTPUT_TAIL)
        ending = runner.Ending(returncode, job.progress.history, tail, r.cancel_requested,
                               why_gone, r.job_id)
        state, reason = runner.outcome(ending)
        job.process, r.pid, r.pid_start = None, None, None
        r.resume = False
        self._set_state(job, state, reason)
        if self.metrics is not None:
            self.metrics.forget_job(r.job_id)
        log.info("job %s: %s: %s", r.job_id, state.name, reason)
        if state is JobState.SUCCEEDED and job.plan.model_name and self.on_succeeded:
            folder = checkpoint_folder(self.root / r.job_id)
            if folder is not None:
                self.on_succeeded(r.job_id, job.plan.model_name, folder)

    def _stop_all(self) -> None:
        """Shutdown: SIGTERM every running job, wait up to the grace period, then SIGKILL our
        own processes; an adopted one still alive is left to the next server."""
        with self._lock:
            running = [(j, j.process) for j in self._jobs.values() if j.process is not None]
            for _, process in running:
                process.signal(signal.SIGTERM)
        runner.wait_until_ended([process for _, process in running], self._grace)
        with self._lock:
            for job, process in running:
                process.kill()
                ended, returncode = process.ended()
                if ended:
                    self._finish(job, returncode, why_gone="the server shut down")

    def _report_states(self) -> None:
        report_states(self.metrics, (job.record.state for job in self._jobs.values()))
