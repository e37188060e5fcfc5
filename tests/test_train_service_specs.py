"""StartJob refuses bad specs, forbidden paths and forbidden URLs with INVALID_ARGUMENT and every
field violation, and leaves nothing behind; job names are labels, never paths; TrainService
needs the admin key when keys are configured."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import (
    ServerThread,
    field_violations,
    rpc_error,
    server_config,
    tiny_byte_checkpoint,
)
from train_job_helpers import small_text, tiny_spec, wait_job

from nanollm.client import Client
from nanollm.client import InvalidArgumentError as ClientInvalidArgument
from nanollm.data import DataPreparer
from nanollm.v1 import train_pb2, train_pb2_grpc

Edit = Callable[[train_pb2.JobSpec], None]
UNKNOWN_JOB = "20990101-000000-abcdef"


class Env:
    def __init__(self, srv: ServerThread, tmp: Path) -> None:
        self.srv = srv
        self.tmp = tmp
        self.root = tmp / "jobs"
        self.train = train_pb2_grpc.TrainServiceStub(srv.channel)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("train_specs")
    data = tmp / "data"
    small_text(data)
    DataPreparer("byte").prepare_data(data / "small.txt", output_dir=data / "prepared-byte",
                                      block_size=32, show_progress=False)
    os.symlink("/etc", data / "etc-link")
    # raw text gpt-train would refuse: an empty file, a binary file, a folder without text files
    # and a folder with a link out of it
    (data / "empty.txt").write_bytes(b"")
    (data / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (data / "no-text").mkdir()
    (data / "no-text" / "notes.csv").write_text("a,b\n")
    (data / "leaky").mkdir()
    (data / "leaky" / "a.txt").write_text("To be, or not to be")
    os.symlink(tmp / "models" / "broken" / "config.json", data / "leaky" / "b.txt")
    (tmp / "models" / "broken").mkdir(parents=True)  # a checkpoint whose config.json is bad
    (tmp / "models" / "broken" / "config.json").write_text("{}")
    (tmp / "models" / "broken" / "model.safetensors").write_bytes(b"")
    config = server_config(tiny_byte_checkpoint(tmp / "models" / "ckpt"), tmp / "models",
                           jobs_root=str(tmp / "jobs"), data_roots=[str(data)],
                           max_upload_bytes=1000, max_download_bytes=5000)
    srv = ServerThread(config, load_default=False)
    try:
        yield Env(srv, tmp)
    finally:
        srv.close()


def left_behind(root: Path) -> list[str]:
    """What is in the jobs root besides its lock file (the root itself is made by the first
    job)."""
    return sorted(p.name for p in root.iterdir() if p.name != ".lock") if root.exists() else []


def _set(path: str, value: object) -> Edit:
    """An edit setting a (dotted) field of the spec."""
    def edit(spec: train_pb2.JobSpec) -> None:
        *parents, name = path.split(".")
        message = spec
        for part in parents:
            message = getattr(message, part)
        setattr(message, name, value)
    return edit


def _clear(field: str) -> Edit:
    return lambda spec: spec.ClearField(field)


def _data(**source: object) -> Edit:
    return lambda spec: spec.data.CopyFrom(train_pb2.DataSource(**source))  # type: ignore


BAD_SPECS: list[tuple[str, list[Edit], str, str]] = [
    ("no model", [_clear("scratch")], "spec.model", "give scratch (a model shape), "
                                                    "checkpoint_path or from_job_id"),
    ("no data", [_clear("data")], "spec.data", "give the training text"),
    ("absolute path outside", [_data(path="/etc/passwd")], "spec.data.path",
     "'/etc/passwd' is outside the dataset roots"),
    ("relative path escaping", [_data(path="../models/ckpt/config.json")], "spec.data.path",
     "is outside the dataset roots"),
    ("link leading out", [_data(path="etc-link/passwd")], "spec.data.path",
     "'etc-link/passwd' is outside the dataset roots"),
    ("missing file", [_data(path="nope.txt")], "spec.data.path", "no dataset at 'nope.txt'"),
    ("empty file", [_data(path="empty.txt")], "spec.data.path",
     "empty.txt: is empty (0 bytes of text); nothing to train on"),
    ("binary file", [_data(path="weights.bin")], "spec.data.path",
     "weights.bin: looks like a binary file (NUL bytes in its first 8 KiB); pass UTF-8 text"),
    ("folder without text files", [_data(path="no-text")], "spec.data.path",
     "no-text: folder holds no text files (looked for .txt"),
    ("folder with a link out of it", [_data(path="leaky")], "spec.data.path",
     "leaky/b.txt: leads to "),
    ("loopback URL", [_data(url="http://127.0.0.1:9/book.txt")], "spec.data.url",
     "refused: 127.0.0.1 is a loopback address"),
    ("metadata URL", [_data(url="http://169.254.169.254/latest")], "spec.data.url",
     "169.254.169.254 is a cloud metadata address"),
    ("private URL", [_data(url="https://10.1.2.3/x.txt")], "spec.data.url",
     "10.1.2.3 is a private address"),
    ("ftp URL", [_data(url="ftp://example.com/x.txt")], "spec.data.url",
     "only http:// and https:// URLs are followed"),
    ("download over the limit", [_data(url="http://93.184.216.34/x", max_download_bytes=9000)],
     "spec.data.max_download_bytes", "must be in [1, 5000] (the server's limit)"),
    ("upload too large", [_data(text=b"x" * 1001)], "spec.data.text",
     "is 1001 bytes; the server accepts at most 1000"),
    ("empty upload", [_data(text=b"")], "spec.data.text", "must not be empty"),
    ("upload with NUL bytes", [_data(text=b"ok\x00\x00")], "spec.data.text",
     "looks like a binary file (NUL bytes in its first 8 KiB); send UTF-8 text"),
    ("upload of whitespace", [_data(text=b" \n\n\t")], "spec.data.text",
     "holds only whitespace (4 bytes); nothing to train on"),
    ("upload not UTF-8", [_data(text=b"ok \xff\xfe")], "spec.data.text", "is not UTF-8 text"),
    ("heads do not divide width", [_set("scratch.n_head", 3)], "spec.scratch.n_embd",
     "ModelConfig.n_embd (32) must be divisible by ModelConfig.n_head (3)"),
    ("no layers", [_set("scratch.n_layer", 0)], "spec.scratch.n_layer",
     "must be in [1, 256], got 0"),
    ("unknown preset", [_set("scratch.preset", "gpt5")], "spec.scratch.preset",
     "must be one of gpt2, gpt2-medium, gpt2-large, gpt2-xl, got 'gpt5'"),
    ("unknown tokenizer", [_set("scratch.tokenizer", "bpe")], "spec.scratch.tokenizer",
     "must be one of gpt2, byte, char, got 'bpe'"),
    ("tokenizer unlike the prepared data", [_set("scratch.tokenizer", "gpt2"),
                                            _data(path="prepared-byte")],
     "spec.scratch.tokenizer", "was tokenized with 'byte'"),
    ("negative learning rate", [_set("training.learning_rate", -1.0)],
     "spec.training.learning_rate", "must be in [0.0, inf], got -1.0"),
    ("infinite learning rate", [_set("training.learning_rate", float("inf"))],
     "spec.training.learning_rate", "must be a finite number in [0.0, inf], got inf"),
    ("infinite gradient clip", [_set("training.grad_clip", float("inf"))],
     "spec.training.grad_clip", "must be a finite number in [0.0, inf], got inf"),
    ("min_lr above lr", [_set("training.min_lr", 0.1)], "spec.training.min_lr",
     "must not exceed TrainingConfig.learning_rate"),
    ("zero steps", [_set("training.max_iters", 0)], "spec.training.max_iters", "must be >= 1"),
    ("absurd batch", [_set("training.batch_size", 2**32 - 1)], "spec.training.batch_size",
     "must be in [1, 65536], got 4294967295"),
    ("unknown dtype", [_set("training.dtype", "fp8")], "spec.training.dtype",
     "must be one of auto, float32, bfloat16, float16, got 'fp8'"),
    ("dropout 1", [_set("training.dropout", 1.0)], "spec.training.dropout",
     "must be in [0.0, 1.0), got 1.0"),
    ("absurd threads", [_set("training.num_threads", 5000)], "spec.training.num_threads",
     "must be in [1, 1024], got 5000"),
    ("validation split", [_data(path="small.txt", train_val_split=0.9)],
     "spec.data.train_val_split", "must be in (0.0, 0.5], got 0.9"),
    ("unknown device", [_set("device", "tpu")], "spec.device", "unknown device 'tpu'"),
    ("too many ranks", [_set("ranks", 100)], "spec.ranks", "must be at most 64, got 100"),
    ("accumulation per rank", [_set("ranks", 2), _set("training.gradient_accumulation_steps", 3)],
     "spec.training.gradient_accumulation_steps", "divisible by the number of ranks (2)"),
    ("checkpoint outside the model roots", [_set("checkpoint_path", "/etc")],
     "spec.checkpoint_path", "'/etc' is outside the model roots"),
    ("checkpoint with a bad config.json", [_set("checkpoint_path", "broken")],
     "spec.checkpoint_path", "broken/config.json: "),
    ("unknown job", [_set("from_job_id", UNKNOWN_JOB)], "spec.from_job_id",
     f"no job '{UNKNOWN_JOB}'"),
    ("malformed job id", [_set("from_job_id", "../../x")], "spec.from_job_id",
     "'../../x' is not a job id"),
    ("bad model name", [_set("load_when_done", True), _set("model_name", "a b")],
     "spec.model_name", "must be 1 to 64 characters"),
    ("model name alone", [_set("model_name", "m")], "spec.model_name",
     "is only used with load_when_done"),
    ("long name", [_set("name", "n" * 101)], "spec.name", "at most 100 printable characters"),
]
if not torch.cuda.is_available():
    BAD_SPECS.append(("CUDA absent", [_set("device", "cuda")], "spec.device",
                      "CUDA is not available"))


@pytest.mark.parametrize(("edits", "field", "why"), [c[1:] for c in BAD_SPECS],
                         ids=[c[0] for c in BAD_SPECS])
def test_bad_specs_are_refused_with_their_field_and_leave_nothing(
        env: Env, edits: list[Edit], field: str, why: str) -> None:
    spec = tiny_spec()
    for edit in edits:
        edit(spec)
    err = rpc_error(lambda: env.train.StartJob(train_pb2.StartJobRequest(spec=spec)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(err)
    assert [f for f, _ in violations] == [field], violations
    assert why in violations[0][1], violations
    assert left_behind(env.root) == []
    assert env.train.ListJobs(train_pb2.ListJobsRequest()).jobs == []


def test_every_bad_field_is_reported_at_once_also_through_the_typed_client(env: Env) -> None:
    spec = tiny_spec(learning_rate=-1.0, max_iters=0)
    spec.scratch.n_layer = 0
    spec.data.path = "/etc/passwd"
    with Client(env.srv.target) as client, pytest.raises(ClientInvalidArgument) as caught:
        client.start_job(spec)
    assert [v.field for v in caught.value.field_violations] == [
        "spec.scratch.n_layer", "spec.training.max_iters", "spec.training.learning_rate",
        "spec.data.path"]
    assert left_behind(env.root) == []


def test_a_job_name_is_a_label_and_outputs_stay_under_the_jobs_root(env: Env) -> None:
    spec = tiny_spec(name="../../escaped", max_iters=5000)
    job = env.train.StartJob(train_pb2.StartJobRequest(spec=spec)).job
    assert job.name == "../../escaped" and job.job_id != job.name
    wait_job(env.train, job.job_id, lambda j: j.state == train_pb2.JOB_STATE_RUNNING)
    env.train.CancelJob(train_pb2.CancelJobRequest(job_id=job.job_id))
    ended = wait_job(env.train, job.job_id,
                     lambda j: j.state == train_pb2.JOB_STATE_CANCELLED, timeout=60)
    assert ended.reason.startswith("cancelled by CancelJob at step ")
    assert left_behind(env.root) == [job.job_id]
    assert not (env.tmp / "escaped").exists() and not (env.root.parent.parent / "escaped").exists()
    assert env.train.DeleteJob(train_pb2.DeleteJobRequest(job_id=job.job_id)).job_id == job.job_id


def test_train_service_needs_the_admin_key(tmp_path: Path) -> None:
    config = server_config(tiny_byte_checkpoint(tmp_path / "ckpt"), tmp_path,
                           jobs_root=str(tmp_path / "jobs"), api_keys=["user-key"],
                           admin_keys=["admin-key"])
    with ServerThread(config, load_default=False) as srv:
        stub = train_pb2_grpc.TrainServiceStub(srv.channel)
        request = train_pb2.ListJobsRequest()
        for metadata, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", "Bearer nope"),),
                                grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", "Bearer user-key"),),
                                grpc.StatusCode.PERMISSION_DENIED)):
            err = rpc_error(lambda m=metadata: stub.ListJobs(request, metadata=m))
            assert err.code() == code
        err = rpc_error(lambda: list(stub.WatchJob(
            train_pb2.WatchJobRequest(job_id=UNKNOWN_JOB),
            metadata=(("authorization", "Bearer user-key"),))))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        with Client(srv.target, api_key="admin-key") as client:
            assert client.list_jobs() == []
        health = health_pb2_grpc.HealthStub(srv.channel).Check(
            health_pb2.HealthCheckRequest(service="nanollm.v1.TrainService"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # needs no key
