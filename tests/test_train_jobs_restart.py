"""A gpt-server killed outright (SIGKILL) mid-job: its job saves and stops, the restarted server
finds it INTERRUPTED, and ResumeJob finishes it with every step logged once and the same losses
as a job that was never interrupted. A graceful shutdown interrupts a running job the same way."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import grpc
from serve_process import GptServerProcess
from server_harness import tiny_byte_checkpoint
from train_job_helpers import small_text, tiny_spec, wait_job, wait_state

from nanollm.v1 import train_pb2, train_pb2_grpc
from trainer.events import read_events
from trainer.jobs.runner import is_alive

GPT_SERVER = Path(sys.executable).parent / "gpt-server"


class ServerProcess(GptServerProcess):
    """gpt-server in a subprocess, with a TrainService stub on its gRPC port."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        super().__init__(args, cwd)
        port = self.wait_for_line(r"gRPC server listening on 127\.0\.0\.1:(\d+)").group(1)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.train = train_pb2_grpc.TrainServiceStub(self.channel)

    def stop(self, sig: int) -> int:  # type: ignore[override]
        self.channel.close()
        self.proc.send_signal(sig)
        return self.proc.wait(60)


def step_losses(job_dir: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in read_events(job_dir) if e["type"] == "step"]


def test_a_killed_server_leaves_its_job_interrupted_and_resume_continues_it_exactly(
        tmp_path: Path) -> None:
    small_text(tmp_path / "data")
    jobs = tmp_path / "jobs"
    args = ["--checkpoint", str(tiny_byte_checkpoint(tmp_path / "ckpt")), "--grpc-only",
            "--grpc-port", "0",
            "--metrics-port", "-1", "--device", "cpu", "--dtype", "float32",
            "--jobs-root", str(jobs), "--data-root", str(tmp_path / "data"),
            "--max-concurrent-jobs", "2", "--log-dir", str(tmp_path / "logs")]
    spec = tiny_spec(name="resumable", width=64, block=64, batch_size=8, max_iters=60,
                     eval_interval=20)

    first = ServerProcess(args, tmp_path)
    job_id = first.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job.job_id
    wait_job(first.train, job_id, lambda j: j.step >= 5, what="step 5")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    # The job's process was told to stop when the server died; it saves and exits by itself.
    state = json.loads((jobs / job_id / "state.json").read_text())
    assert state["state"] == "RUNNING"
    deadline = time.monotonic() + 60
    while is_alive(state["pid"], state["pid_start"]):
        assert time.monotonic() < deadline, "the job's process outlived its server"
        time.sleep(0.1)
    end = read_events(jobs / job_id)[-1]
    output = (jobs / job_id / "output.log").read_text()
    assert (end["type"], end.get("reason"), end.get("signal")) == (
        "end", "interrupted", "SIGTERM"), output[-3000:]
    stopped_at = end["step"]
    assert 5 <= stopped_at < 60

    second = ServerProcess(args, tmp_path)
    try:
        job = second.train.GetJob(train_pb2.GetJobRequest(job_id=job_id)).job
        assert job.state == train_pb2.JOB_STATE_INTERRUPTED
        assert job.reason == (f"the server stopped while the job ran at step {stopped_at}; "
                              f"{job_id}/latest holds step {stopped_at}; ResumeJob continues "
                              "it from there")
        resumed = second.train.ResumeJob(train_pb2.ResumeJobRequest(job_id=job_id)).job
        assert resumed.state == train_pb2.JOB_STATE_QUEUED
        assert resumed.reason == f"waiting for a slot, to resume from step {stopped_at}"
        reference = second.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job.job_id
        done = wait_state(second.train, job_id, train_pb2.JOB_STATE_SUCCEEDED, timeout=180)
        wait_state(second.train, reference, train_pb2.JOB_STATE_SUCCEEDED, timeout=180)
        assert (done.runs, done.step) == (2, 60)
        snapshot = next(iter(second.train.WatchJob(train_pb2.WatchJobRequest(job_id=job_id))))
        assert [s.step for s in snapshot.snapshot.steps] == list(range(1, 61))
        # A finished job trains longer; a graceful shutdown then stops it with a checkpoint.
        longer = second.train.ResumeJob(train_pb2.ResumeJobRequest(job_id=job_id,
                                                                    max_iters=100_000)).job
        assert longer.max_iters == 100_000
        wait_job(second.train, job_id, lambda j: j.step >= 63, what="step 63")
    finally:
        assert second.stop(signal.SIGTERM) == 0
    state = json.loads((jobs / job_id / "state.json").read_text())
    last = read_events(jobs / job_id)[-1]
    assert (state["state"], last["type"], last["signal"]) == ("INTERRUPTED", "end", "SIGTERM")
    assert state["reason"] == (f"the server shut down at step {last['step']}; {job_id}/latest "
                               f"holds step {last['step']}; ResumeJob continues it from there")
    # Every step logged once, across the two runs, with the losses of the uninterrupted job.
    got, want = step_losses(jobs / job_id)[:60], step_losses(jobs / reference)
    assert [s for s, _ in got] == list(range(1, 61)) == [s for s, _ in want]
    for (step, loss), (_, expected) in zip(got, want, strict=True):
        assert abs(loss - expected) < 1e-5, (step, loss, expected)
    starts = [e for e in read_events(jobs / job_id) if e["type"] == "start"]
    assert [(e["step"], e["resumed"]) for e in starts] == [(0, False), (stopped_at, True),
                                                           (60, True)]
