"""TrainService on a real server with real job processes: a job queued behind another, watched
live by several clients to SUCCEEDED, loaded automatically and by job id, cancelled mid-run,
deleted; grpcurl starts and watches one through reflection only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_harness import ServerThread, greedy, rpc_error, server_config, tiny_byte_checkpoint
from train_job_helpers import (
    final_states,
    small_text,
    steps_of,
    tiny_spec,
    wait_job,
    wait_state,
)

from nanollm.client import AsyncClient
from nanollm.v1 import generate_pb2, model_admin_pb2, train_pb2, train_pb2_grpc
from trainer.events import read_events

REPO = Path(__file__).resolve().parent.parent
GRPCURL = Path(sys.executable).parent / "grpcurl"


class Jobs:
    """The module's server, its TrainService stub and the jobs the tests share."""

    def __init__(self, srv: ServerThread, root: Path) -> None:
        self.srv = srv
        self.root = root
        self.train = train_pb2_grpc.TrainServiceStub(srv.channel)
        self.ids: dict[str, str] = {}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jobs]:
    tmp = tmp_path_factory.mktemp("train_service")
    small_text(tmp / "data")
    config = server_config(tiny_byte_checkpoint(tmp / "ckpt"), tmp,
                           jobs_root=str(tmp / "jobs"), data_roots=[str(tmp / "data")],
                           max_concurrent_jobs=1)
    srv = ServerThread(config)
    try:
        yield Jobs(srv, tmp / "jobs")
    finally:
        srv.close()


def watch(stub: train_pb2_grpc.TrainServiceStub, job_id: str, out: list[train_pb2.WatchJobResponse],
          leave_after_step: int | None = None) -> threading.Thread:
    """Collect a WatchJob stream in a thread; with leave_after_step, disconnect once a live step
    at least that far has arrived."""
    call = stub.WatchJob(train_pb2.WatchJobRequest(job_id=job_id))

    def run() -> None:
        for message in call:
            out.append(message)
            if leave_after_step is not None and message.HasField("step") and \
                    message.step.step >= leave_after_step:
                call.cancel()
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_jobs_queue_in_order_and_watchers_follow_one_live_to_succeeded(jobs: Jobs) -> None:
    stub = jobs.train
    spec_a = tiny_spec(name="a", width=64, block=64, batch_size=8, max_iters=120,
                       eval_interval=20, learning_rate=3e-3)
    spec_a.load_when_done, spec_a.model_name = True, "job-a"
    a = stub.StartJob(train_pb2.StartJobRequest(spec=spec_a)).job
    # b: long enough to be cancelled mid-run by the next test
    b = stub.StartJob(train_pb2.StartJobRequest(spec=tiny_spec(
        name="b", width=64, block=64, batch_size=8, max_iters=3000, eval_interval=5))).job
    jobs.ids.update(a=a.job_id, b=b.job_id)
    assert (a.name, a.spec.training.max_iters, a.max_iters) == ("a", 120, 120)
    assert b.state == train_pb2.JOB_STATE_QUEUED  # one job at a time on this server

    full: list[train_pb2.WatchJobResponse] = []
    leaver: list[train_pb2.WatchJobResponse] = []
    late: list[train_pb2.WatchJobResponse] = []
    threads = [watch(stub, a.job_id, full), watch(stub, a.job_id, leaver, leave_after_step=3)]
    running = wait_job(stub, a.job_id, lambda j: j.step >= 5, what="step 5")
    assert running.state == train_pb2.JOB_STATE_RUNNING and running.runs == 1
    waiting = stub.GetJob(train_pb2.GetJobRequest(job_id=b.job_id)).job
    assert (waiting.state, waiting.queue_position, waiting.reason) == (
        train_pb2.JOB_STATE_QUEUED, 0, "waiting for a slot")
    threads.append(watch(stub, a.job_id, late))
    for thread in threads:
        thread.join(180)

    done = wait_state(stub, a.job_id, train_pb2.JOB_STATE_SUCCEEDED)
    assert done.reason.startswith("trained to step 120; best val loss ")
    assert done.checkpoint == f"{a.job_id}/best" and done.last_step.step == 120
    # the full watcher: snapshot first, every step once in order, a falling loss, evaluations,
    # checkpoints, log lines, and the state change that ends the stream last
    assert full[0].HasField("snapshot") and steps_of(full) == list(range(1, 121))
    curve = {m.step.step: m.step.loss for m in full if m.HasField("step")}
    curve.update({s.step: s.loss for s in full[0].snapshot.steps})
    first, last = sum(curve[s] for s in range(1, 6)) / 5, sum(curve[s] for s in range(116, 121)) / 5
    assert last < first - 0.5, (first, last)
    assert [m.eval.step for m in full if m.HasField("eval")] == [20, 40, 60, 80, 100, 120]
    assert {m.checkpoint.kind for m in full if m.HasField("checkpoint")} == {"latest", "best"}
    assert any("step 120/120" in m.log.text for m in full if m.HasField("log"))
    assert final_states(full)[-1] == train_pb2.JOB_STATE_SUCCEEDED
    assert full[-1].state_change.state == train_pb2.JOB_STATE_SUCCEEDED
    # the one that left early saw a few steps and disturbed nobody
    assert 3 <= max(steps_of(leaver)) < 120
    # the late one: a snapshot holding the history so far, then live events, no step twice
    snap = late[0].snapshot
    assert snap.job.state == train_pb2.JOB_STATE_RUNNING and len(snap.steps) >= 5
    assert [s.step for s in snap.steps] == list(range(1, len(snap.steps) + 1))
    assert steps_of(late) == list(range(1, 121))
    assert any(m.HasField("step") for m in late[1:])
    # b started only once a had ended
    started_b = wait_job(stub, b.job_id, lambda j: j.HasField("started_at"), what="b to start")
    assert started_b.started_at.ToNanoseconds() >= done.ended_at.ToNanoseconds()


def test_load_when_done_serves_the_job_and_watching_an_ended_job_ends_after_the_snapshot(
        jobs: Jobs) -> None:
    job_id = jobs.ids["a"]
    done = wait_job(jobs.train, job_id, lambda j: j.loaded_model == "job-a",
                    what="load_when_done")
    model = jobs.srv.admin.GetModel(model_admin_pb2.GetModelRequest(name="job-a")).model
    assert (model.state, model.source_path) == (model_admin_pb2.MODEL_STATE_READY,
                                                f"job {job_id} (best)")
    assert (model.n_layer, model.n_embd, model.tokenizer) == (2, 64, "byte")
    request = greedy("ROMEO:", max_tokens=8)
    request.model = "job-a"
    reply = jobs.srv.generate.Generate(request)
    assert reply.choices[0].finish_reason == generate_pb2.FINISH_REASON_LENGTH
    messages = list(jobs.train.WatchJob(train_pb2.WatchJobRequest(job_id=job_id,
                                                                  exclude_logs=True)))
    assert len(messages) == 1 and messages[0].snapshot.job.state == done.state
    assert len(messages[0].snapshot.steps) == 120 and not messages[0].snapshot.recent_logs


def test_cancel_mid_run_saves_a_checkpoint_that_loads_by_job_id(jobs: Jobs) -> None:
    stub, job_id = jobs.train, jobs.ids["b"]
    wait_job(stub, job_id, lambda j: j.step >= 3, what="step 3 of b")
    # while it runs: no loading, no deleting, and its progress is on /metrics
    err = rpc_error(lambda: jobs.srv.admin.LoadModel(
        model_admin_pb2.LoadModelRequest(name="job-b", job_id=job_id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"job {job_id} is RUNNING" in (err.details() or "")
    err = rpc_error(lambda: stub.DeleteJob(train_pb2.DeleteJobRequest(job_id=job_id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    registry = jobs.srv.server.metrics.registry
    wait_job(stub, job_id, lambda j: (registry.get_sample_value(
        "nanollm_training_job_loss", {"job": job_id}) or 0) > 0, what="the loss gauge")
    assert registry.get_sample_value("nanollm_training_jobs", {"state": "RUNNING"}) == 1

    stopping = stub.CancelJob(train_pb2.CancelJobRequest(job_id=job_id)).job
    assert stopping.state == train_pb2.JOB_STATE_RUNNING
    assert stopping.reason == "stopping: CancelJob asked it to finish its step and save"
    cancelled = wait_state(stub, job_id, train_pb2.JOB_STATE_CANCELLED)
    step = cancelled.step
    assert 3 <= step < 3000
    assert cancelled.reason == (f"cancelled by CancelJob at step {step}; {job_id}/latest holds "
                                f"step {step}")
    assert registry.get_sample_value("nanollm_training_job_loss", {"job": job_id}) is None
    err = rpc_error(lambda: stub.CancelJob(train_pb2.CancelJobRequest(job_id=job_id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    model = jobs.srv.admin.LoadModel(model_admin_pb2.LoadModelRequest(
        name="job-b", job_id=job_id)).model
    assert model.state == model_admin_pb2.MODEL_STATE_READY and model.block_size == 64
    request = greedy("ROMEO:", max_tokens=4)
    request.model = "job-b"
    assert jobs.srv.generate.Generate(request).usage.completion_tokens == 4


def test_a_job_fine_tunes_from_an_earlier_job(jobs: Jobs) -> None:
    spec = tiny_spec(name="c", max_iters=3, eval_interval=3)
    spec.from_job_id = jobs.ids["b"]
    job = jobs.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job
    jobs.ids["c"] = job.job_id
    wait_state(jobs.train, job.job_id, train_pb2.JOB_STATE_SUCCEEDED)
    start = read_events(jobs.root / job.job_id)[0]
    assert start["init_from"] == str(jobs.root / jobs.ids["b"] / "best")  # best, else latest
    assert start["config"]["model"]["n_embd"] == 64  # the shape of b, not of the spec's scratch


async def test_the_async_client_watches_and_lists_jobs(jobs: Jobs) -> None:
    async with AsyncClient(jobs.srv.target) as client:
        async with client.watch_job(jobs.ids["a"], exclude_logs=True) as watch:
            messages = [m async for m in watch]
        assert len(messages) == 1 and len(messages[0].snapshot.steps) == 120
        succeeded = await client.list_jobs([train_pb2.JOB_STATE_SUCCEEDED])
        assert [j.job_id for j in succeeded] == [jobs.ids["a"], jobs.ids["c"]]
        cancelled = await client.list_jobs([train_pb2.JOB_STATE_CANCELLED])
        assert [j.job_id for j in cancelled] == [jobs.ids["b"]]


def test_delete_removes_the_folder_and_unknown_ids_are_refused(jobs: Jobs) -> None:
    stub, job_id = jobs.train, jobs.ids["b"]
    assert (jobs.root / job_id / "latest").is_dir()
    assert stub.DeleteJob(train_pb2.DeleteJobRequest(job_id=job_id)).job_id == job_id
    assert not (jobs.root / job_id).exists()
    assert [j.job_id for j in stub.ListJobs(train_pb2.ListJobsRequest()).jobs] == [
        jobs.ids["a"], jobs.ids["c"]]
    err = rpc_error(lambda: stub.GetJob(train_pb2.GetJobRequest(job_id=job_id)))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND,
                                          f"no job {job_id!r} (ListJobs shows the jobs)")
    err = rpc_error(lambda: stub.GetJob(train_pb2.GetJobRequest(job_id="../jobs")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a model loaded from the deleted job stays served
    assert jobs.srv.admin.GetModel(model_admin_pb2.GetModelRequest(name="job-b")).model.state \
        == model_admin_pb2.MODEL_STATE_READY


def test_a_resumed_job_replaces_the_model_its_first_run_loaded(jobs: Jobs) -> None:
    """load_when_done again after ResumeJob: the model it serves under its name is the new
    run's (it was refused as ALREADY_EXISTS, and the old weights kept serving)."""
    stub, job_id = jobs.train, jobs.ids["a"]
    admin = jobs.srv.admin
    before = admin.GetModel(model_admin_pb2.GetModelRequest(name="job-a")).model
    stub.ResumeJob(train_pb2.ResumeJobRequest(job_id=job_id, max_iters=125))
    wait_job(stub, job_id, lambda j: j.state == train_pb2.JOB_STATE_SUCCEEDED and j.runs == 2,
             what="the second run")

    def reloaded(_: train_pb2.Job) -> bool:
        model = admin.GetModel(model_admin_pb2.GetModelRequest(name="job-a")).model
        return model.state == model_admin_pb2.MODEL_STATE_READY and \
            model.loaded_at.ToNanoseconds() > before.loaded_at.ToNanoseconds()

    wait_job(stub, job_id, reloaded, timeout=60, what="job-a loaded again")
    done = wait_job(stub, job_id, lambda j: j.loaded_model == "job-a", what="the note")
    assert "failed" not in done.reason, done.reason


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl is not installed (make install)")
def test_grpcurl_script_starts_and_watches_a_job_through_reflection(jobs: Jobs) -> None:
    env = dict(os.environ, GRPCURL=str(GRPCURL))
    proc = subprocess.run(["bash", str(REPO / "clients" / "grpcurl_train.sh"), "-d", "small.txt",
                           "-n", "20", jobs.srv.target], capture_output=True, text=True,
                          timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "rpc WatchJob ( .nanollm.v1.WatchJobRequest ) returns ( stream " in out
    assert '"snapshot": {' in out and '"state_change": {' in out
    assert '"step": "20",' in out  # a live step event (uint64 is a JSON string)
    assert out.count('"state": "JOB_STATE_SUCCEEDED"') >= 2  # the last event, and GetJob
    assert "nanollm.v1.TrainService/WatchJob" in proc.stderr  # each command is shown
