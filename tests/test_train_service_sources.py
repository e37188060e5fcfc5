"""Data a job downloads or is sent: a 2-rank gloo job (torchrun) on an http URL reports its
progress; a download over its size limit fails the job with the reason; uploaded text trains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from local_http import LocalServer, send_body
from server_harness import ServerThread, server_config, tiny_byte_checkpoint
from train_job_helpers import CORPUS, steps_of, tiny_spec, wait_state

from nanollm.v1 import train_pb2, train_pb2_grpc

BOOK = CORPUS.read_bytes()[:100_000]


class Env:
    def __init__(self, srv: ServerThread, web: LocalServer, root: Path) -> None:
        self.srv = srv
        self.web = web
        self.root = root
        self.train = train_pb2_grpc.TrainServiceStub(srv.channel)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("train_sources")
    # This server may download from 127.0.0.1 (the test's web server): allow_private_urls.
    config = server_config(tiny_byte_checkpoint(tmp / "ckpt"), tmp, jobs_root=str(tmp / "jobs"),
                           data_roots=[str(tmp)], allow_private_urls=True,
                           max_concurrent_jobs=2)
    with LocalServer({"/book.txt": send_body(BOOK, piece=8192)}) as web, \
            ServerThread(config, load_default=False) as srv:
        yield Env(srv, web, tmp / "jobs")


def test_a_download_over_its_size_limit_fails_the_job(env: Env) -> None:
    spec = tiny_spec(train_pb2.DataSource(url=env.web.url("/book.txt"),
                                          max_download_bytes=50_000))
    job = env.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job
    failed = wait_state(env.train, job.job_id, train_pb2.JOB_STATE_FAILED, timeout=60)
    assert failed.reason == (f"{env.web.url('/book.txt')}: the body is 100000 bytes, over the "
                             "download limit of 50000 bytes; raise max_download_bytes or "
                             "download it yourself and pass the file")
    assert not (env.root / job.job_id / "data" / "download.txt").exists()


def test_a_two_rank_job_on_a_url_trains_through_torchrun(env: Env) -> None:
    spec = tiny_spec(train_pb2.DataSource(url=env.web.url("/book.txt")), max_iters=8,
                     eval_interval=4, gradient_accumulation_steps=2)
    spec.ranks = 2
    job = env.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job
    messages = list(env.train.WatchJob(train_pb2.WatchJobRequest(job_id=job.job_id),
                                       timeout=240))
    assert messages[-1].state_change.state == train_pb2.JOB_STATE_SUCCEEDED, messages[-1]
    assert steps_of(messages) == list(range(1, 9))
    logs = [m.log.text for m in messages if m.HasField("log")]
    logs += [line.text for line in messages[0].snapshot.recent_logs]
    assert any("trainer.launch --standalone --nproc_per_node=2" in line for line in logs)
    assert any("2 rank(s) on cpu" in line for line in logs)
    folder = env.root / job.job_id
    assert (folder / "data" / "download.txt").read_bytes() == BOOK
    assert (folder / "best" / "model.safetensors").is_file()


def test_uploaded_text_trains(env: Env) -> None:
    spec = tiny_spec(train_pb2.DataSource(text=BOOK[:60_000]), max_iters=4, eval_interval=2)
    job = env.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job
    assert job.uploaded_bytes == 60_000 and not job.spec.data.HasField("text")
    wait_state(env.train, job.job_id, train_pb2.JOB_STATE_SUCCEEDED)
    assert (env.root / job.job_id / "data" / "upload.txt").read_bytes() == BOOK[:60_000]
