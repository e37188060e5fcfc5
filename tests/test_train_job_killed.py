"""A job's own process killed outright (the server keeps running) between two checkpoints: the
job becomes INTERRUPTED naming the checkpoint it keeps, ResumeJob says it continues from that
checkpoint's step (not the last step logged), and the resumed run logs every step once."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import ServerThread, rpc_error, server_config, tiny_byte_checkpoint
from train_job_helpers import small_text, steps_of, tiny_spec, wait_job, wait_state

from nanollm.v1 import train_pb2, train_pb2_grpc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("train_killed")
    small_text(tmp / "data")
    config = server_config(tiny_byte_checkpoint(tmp / "ckpt"), tmp, jobs_root=str(tmp / "jobs"),
                           data_roots=[str(tmp / "data")])
    with ServerThread(config, load_default=False) as srv:
        yield srv, tmp / "jobs"


def test_a_killed_job_resumes_from_its_checkpoint_step(
        server: tuple[ServerThread, Path]) -> None:
    srv, root = server
    stub = train_pb2_grpc.TrainServiceStub(srv.channel)
    spec = tiny_spec(width=64, block=64, batch_size=8, max_iters=150, eval_interval=100)
    job_id = stub.StartJob(train_pb2.StartJobRequest(spec=spec)).job.job_id
    wait_job(stub, job_id, lambda j: j.step >= 105, what="step 105")
    os.kill(json.loads((root / job_id / "state.json").read_text())["pid"], signal.SIGKILL)

    stopped = wait_state(stub, job_id, train_pb2.JOB_STATE_INTERRUPTED, timeout=60)
    assert 105 <= stopped.step < 150
    assert stopped.reason == (f"its process was stopped by SIGKILL at step {stopped.step}; "
                              f"{job_id}/latest holds step 100; ResumeJob continues it from "
                              "there")
    # The run continues from step 100, so max_iters only has to lie beyond that.
    too_few = rpc_error(lambda: stub.ResumeJob(train_pb2.ResumeJobRequest(job_id=job_id,
                                                                           max_iters=100)))
    assert too_few.details() == ("invalid request: max_iters: must be more than the 100 steps "
                                 "the job resumes from, got 100")
    resumed = stub.ResumeJob(train_pb2.ResumeJobRequest(job_id=job_id)).job
    assert resumed.reason == "waiting for a slot, to resume from step 100"

    done = wait_state(stub, job_id, train_pb2.JOB_STATE_SUCCEEDED, timeout=120)
    assert (done.step, done.runs) == (150, 2)
    watched = list(stub.WatchJob(train_pb2.WatchJobRequest(job_id=job_id, exclude_logs=True)))
    assert steps_of(watched) == list(range(1, 151))
