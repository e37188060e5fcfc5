"""The job machinery without a server: reading files while they grow, the history of a resumed
run, what a process's end means, and a new manager on a jobs root an earlier server left."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_job_helpers import tiny_spec

from nanollm.v1 import train_pb2
from trainer.jobs.errors import JobNotFoundError, JobsUnavailableError, SpecError
from trainer.jobs.events import FileTail, JobHistory, JobProgress
from trainer.jobs.manager import JobManager, JobsSettings
from trainer.jobs.runner import Ending, outcome, process_start_time
from trainer.jobs.spec import DataPlan, JobPlan, SpecLimits, SpecRules
from trainer.jobs.store import JobRecord, JobsRootBusyError, JobState, JobStore

JOB = "20261202-101010-abcdef"


def test_a_tail_takes_complete_lines_only_and_starts_over_on_a_replaced_file(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = FileTail(path)
    assert tail.read() == []  # not there yet
    path.write_bytes(b'{"a": 1}\n{"b": ')
    assert tail.read() == ['{"a": 1}']
    with path.open("ab") as f:
        f.write(b'2}\n')
    assert tail.read() == ['{"b": 2}'] and tail.read() == []
    replacement = tmp_path / "new"
    replacement.write_bytes(b"x\ny\n")
    replacement.replace(path)  # e.g. a job that starts over
    assert tail.read() == ["x", "y"] and tail.restarted
    with path.open("ab") as f:
        f.write(b"z\n" * 5 + b"partial")
    assert FileTail(path).last_lines(3) == ["z", "z", "z"]


def _events(*events: dict[str, object]) -> JobHistory:
    history = JobHistory()
    for event in events:
        history.add({"time": 1.0, **event})  # type: ignore[arg-type]
    return history


def test_a_resumed_run_continues_the_history_from_its_checkpoint() -> None:
    history = _events(
        {"type": "start", "step": 0, "resumed": False},
        *[{"type": "step", "step": s, "loss": 5.0 - s} for s in range(1, 6)],
        {"type": "eval", "step": 4, "val_loss": 2.0},
        {"type": "checkpoint", "step": 4, "kind": "latest"},
        # killed at step 5 (not saved), resumed from the checkpoint at step 4
        {"type": "start", "step": 4, "resumed": True},
        {"type": "step", "step": 5, "loss": 0.5},
    )
    assert [(e["step"], e["loss"]) for e in history.steps] == [
        (1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0), (5, 0.5)]
    assert history.step == 5 and history.best_val_loss == 2.0
    history.add({"type": "start", "step": 0, "resumed": False})  # started over
    assert history.steps == [] and history.evals == [] and history.step == 0


CASES = [
    # (returncode, events, console output, cancel requested, why gone) -> state, reason
    (0, [{"type": "end", "step": 9, "reason": "completed"}, {"type": "eval", "step": 9,
                                                             "val_loss": 1.5}],
     [], False, None, JobState.SUCCEEDED, "trained to step 9; best val loss 1.5000"),
    (2, [], ["== run 1 (new): ...", "gpt-train: error: data_path 'x.txt' does not exist"],
     False, None, JobState.FAILED, "data_path 'x.txt' does not exist"),
    (1, [{"type": "error", "step": 3, "message": "TrainingError: the training loss is nan",
          "error_type": "TrainingError"}], ["Traceback ...", "done"], False, None,
     JobState.FAILED, "TrainingError: the training loss is nan"),
    (2, [], ["error: http://h/x: HTTP 404 Not Found"], False, None, JobState.FAILED,
     "http://h/x: HTTP 404 Not Found"),
    (-signal.SIGKILL, [{"type": "checkpoint", "step": 4, "kind": "latest"},
                       {"type": "step", "step": 6}], [], False, None, JobState.INTERRUPTED,
     f"its process was stopped by SIGKILL at step 6; {JOB}/latest holds step 4; ResumeJob "
     "continues it from there"),
    (0, [{"type": "checkpoint", "step": 3, "kind": "latest"},
         {"type": "end", "step": 3, "reason": "interrupted", "signal": "SIGTERM"}], [], False,
     None, JobState.INTERRUPTED, f"its process was stopped by SIGTERM at step 3; {JOB}/latest "
                                 "holds step 3; ResumeJob continues it from there"),
    (0, [{"type": "checkpoint", "step": 3, "kind": "latest"},
         {"type": "end", "step": 3, "reason": "interrupted", "signal": "SIGTERM"}], [], True,
     None, JobState.CANCELLED, f"cancelled by CancelJob at step 3; {JOB}/latest holds step 3"),
    (130, [], [], True, None, JobState.CANCELLED,
     "cancelled by CancelJob at step 0; it saved no checkpoint"),
    (None, [{"type": "end", "step": 8, "reason": "completed"}], [], False, "the server stopped",
     JobState.SUCCEEDED, "trained to step 8"),
    (None, [], [], False, "the server stopped", JobState.INTERRUPTED,
     "the server stopped at step 0; it saved no checkpoint; ResumeJob starts it over"),
]


@pytest.mark.parametrize(("rc", "events", "output", "cancel", "gone", "state", "reason"), CASES)
def test_what_the_end_of_a_job_process_means(rc: int | None, events: list[dict[str, object]],
                                             output: list[str], cancel: bool, gone: str | None,
                                             state: JobState, reason: str) -> None:
    ending = Ending(rc, _events(*events), output, cancel, gone, JOB)
    assert outcome(ending) == (state, reason)


def _plan(tmp_path: Path) -> JobPlan:
    return JobPlan(spec=tiny_spec(), train={"init_from": "scratch", "max_iters": 20},
                   data=DataPlan("path", path=str(tmp_path / "small.txt")), ranks=1,
                   model_name=None)


def _manager(root: Path) -> JobManager:
    limits = SpecLimits(data_roots=[root], model_roots=[root], max_upload_bytes=1,
                        max_download_bytes=1)

    def no_paths(path: str, roots: list[Path], what: str, field: str) -> Path:
        raise SpecError([(field, "no paths here")])

    rules = SpecRules(resolve_path=no_paths, model_name_problem=lambda name: None)
    return JobManager(JobsSettings(root=root, limits=limits, poll_interval=0.02), rules)


def _running(job_id: str, pid: int, start: int | None) -> JobRecord:
    return JobRecord(job_id=job_id, name=job_id, state=JobState.RUNNING, reason="started",
                     created_at=time.time(), max_iters=20, runs=1, pid=pid, pid_start=start)


def test_a_new_manager_settles_the_jobs_an_earlier_server_left(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    store = JobStore(root)
    store.open()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone_id, adopted_id = "20261202-101010-000001", "20261202-101011-000002"
    store.create(_running(gone_id, dead.pid, None), _plan(tmp_path))
    (root / gone_id / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"type": "start", "step": 0, "resumed": False, "max_iters": 20},
        {"type": "step", "step": 1, "loss": 5.0},
        {"type": "checkpoint", "step": 1, "kind": "latest", "path": "x"},
        {"type": "step", "step": 2, "loss": 4.0}]) + '{"type": "st')  # torn by the crash
    alive = subprocess.Popen(["sleep", "60"])
    store.create(_running(adopted_id, alive.pid, process_start_time(alive.pid)), _plan(tmp_path))
    (root / ".20261202-101012-000003.tmp-1-x-y-z").mkdir()  # a creation cut short
    (root / "notes").mkdir()  # not a job
    store.close()

    manager = _manager(root)
    manager.start()
    second = _manager(root)  # another server on the same root: no jobs, and it says why
    second.start()
    try:
        with pytest.raises(JobsRootBusyError):
            JobStore(root).open()
        with pytest.raises(JobsUnavailableError, match=f"jobs root {root} is in use by another "
                                                       "server; give each server its own"):
            second.list()
        gone = manager.get(gone_id)
        assert (gone.state, gone.step) == (train_pb2.JOB_STATE_INTERRUPTED, 2)
        assert gone.reason == (f"the server stopped while the job ran at step 2; {gone_id}/latest"
                               " holds step 1; ResumeJob continues it from there")
        adopted = manager.get(adopted_id)
        assert adopted.state == train_pb2.JOB_STATE_RUNNING
        assert adopted.reason == (f"still running: its process (pid {alive.pid}) outlived the "
                                  "previous server")
        alive.kill()
        alive.wait()
        deadline = time.monotonic() + 10
        while manager.get(adopted_id).state == train_pb2.JOB_STATE_RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert manager.get(adopted_id).state == train_pb2.JOB_STATE_INTERRUPTED
        assert sorted(p.name for p in root.iterdir()) == [".lock", gone_id, adopted_id, "notes"]
        assert json.loads((root / gone_id / "state.json").read_text())["state"] == "INTERRUPTED"
        with pytest.raises(JobNotFoundError):
            manager.get("20261202-000000-ffffff")
    finally:
        manager.shutdown(grace=0)
        second.shutdown(grace=0)
    assert JobProgress(root / gone_id).refresh()[-1]["step"] == 2


def test_a_server_that_never_trains_creates_no_jobs_root(tmp_path: Path) -> None:
    manager = _manager(tmp_path / "jobs")
    manager.start()
    try:
        assert manager.list() == [] and not (tmp_path / "jobs").exists()
        with pytest.raises(JobNotFoundError):
            manager.get(JOB)
    finally:
        manager.shutdown(grace=0)
    assert not (tmp_path / "jobs").exists()
