"""A relative --jobs-root (the default, `jobs`) works: a job's process runs inside its own folder,
so the paths the server hands it must not be relative to the server's working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_harness import ServerThread, server_config, tiny_byte_checkpoint
from train_job_helpers import TERMINAL, small_text, state_name, tiny_spec, wait_job

from nanollm.v1 import train_pb2, train_pb2_grpc

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_job_under_a_relative_jobs_root_trains_and_saves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    small_text(tmp_path / "data")
    checkpoint = tiny_byte_checkpoint(tmp_path / "models" / "tiny")
    config = server_config(checkpoint, tmp_path, jobs_root="jobs", data_roots=["data"])
    with ServerThread(config) as server:
        stub = train_pb2_grpc.TrainServiceStub(server.channel)
        job = stub.StartJob(train_pb2.StartJobRequest(spec=tiny_spec(max_iters=10))).job
        job = wait_job(stub, job.job_id, lambda j: j.state in TERMINAL)
        assert state_name(job.state) == "JOB_STATE_SUCCEEDED", job.reason
        assert (tmp_path / "jobs" / job.job_id / "latest" / "model.safetensors").is_file()
