"""Tiny job specs and waiting helpers for the TrainService tests (real servers, real jobs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nanollm.v1 import train_pb2, train_pb2_grpc

CORPUS = Path(__file__).resolve().parent.parent / "nanollm" / "assets" / "corpus" / \
    "shakespeare.txt"
TERMINAL = {train_pb2.JOB_STATE_SUCCEEDED, train_pb2.JOB_STATE_FAILED,
            train_pb2.JOB_STATE_CANCELLED, train_pb2.JOB_STATE_INTERRUPTED}


def small_text(folder: Path, name: str = "small.txt", size: int = 100_000) -> Path:
    """The first `size` bytes of the bundled corpus as a text file in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(CORPUS.read_bytes()[:size])
    return path


def tiny_spec(data: train_pb2.DataSource | str = "small.txt", *, name: str = "tiny",
              width: int = 32, block: int = 32, **training: Any) -> train_pb2.JobSpec:
    """A 2-layer byte-level model on CPU; training settings as keywords override the defaults
    (20 steps, every step logged, an evaluation every 10)."""
    params: dict[str, Any] = dict(max_iters=20, batch_size=4, eval_interval=10, eval_iters=2,
                                  log_interval=1, warmup_iters=2, learning_rate=3e-3,
                                  dtype="float32", seed=7)
    params.update(training)
    source = train_pb2.DataSource(path=data) if isinstance(data, str) else data
    return train_pb2.JobSpec(
        name=name, device="cpu", data=source, training=train_pb2.TrainingParams(**params),
        scratch=train_pb2.ModelShape(n_layer=2, n_head=2, n_embd=width, block_size=block,
                                     tokenizer="byte"))


def state_name(value: int) -> str:
    return train_pb2.JobState.Name(value)


def wait_job(stub: train_pb2_grpc.TrainServiceStub, job_id: str, until: Any,
             timeout: float = 120, what: str = "the job") -> train_pb2.Job:
    """Poll GetJob until `until(job)` holds; fails with the job's last state and reason."""
    end = time.monotonic() + timeout
    while True:
        job = stub.GetJob(train_pb2.GetJobRequest(job_id=job_id)).job
        if until(job):
            return job
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}: {state_name(job.state)} "
                                 f"({job.reason}) at step {job.step}")
        time.sleep(0.1)


def wait_state(stub: train_pb2_grpc.TrainServiceStub, job_id: str, state: int,
               timeout: float = 120) -> train_pb2.Job:
    return wait_job(stub, job_id, lambda job: job.state == state, timeout,
                    f"{state_name(state)}")


def steps_of(messages: list[train_pb2.WatchJobResponse]) -> list[int]:
    """Step numbers of a watch: the snapshot's history, then the live step events."""
    out: list[int] = []
    for message in messages:
        if message.HasField("snapshot"):
            out += [s.step for s in message.snapshot.steps]
        elif message.HasField("step"):
            out.append(message.step.step)
    return out


def losses_of(messages: list[train_pb2.WatchJobResponse]) -> dict[int, float]:
    out: dict[int, float] = {}
    for message in messages:
        if message.HasField("snapshot"):
            out.update({s.step: s.loss for s in message.snapshot.steps})
        elif message.HasField("step"):
            out[message.step.step] = message.step.loss
    return out


def final_states(messages: list[train_pb2.WatchJobResponse]) -> list[int]:
    return [m.state_change.state for m in messages if m.HasField("state_change")]
