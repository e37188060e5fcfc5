"""The training jobs REST (gateway/jobs.py, real uvicorn in front of a real gRPC server) answers
request bodies that are not what a JobSpec can be, and uploads too large for the server, with a
400 OpenAI error body naming the part, never a 500 or a 429, and starts no job."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx2
import pytest
from gateway_harness import GatewayThread
from server_harness import ServerThread, server_config, tiny_byte_checkpoint
from train_job_helpers import small_text

SPEC = {"name": "tiny", "device": "cpu", "data": {"path": "small.txt"},
        "scratch": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                    "tokenizer": "byte"},
        "training": {"max_iters": 5, "batch_size": 4, "dtype": "float32"}}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx2.Client]:
    tmp = tmp_path_factory.mktemp("train_gateway_bodies")
    small_text(tmp / "data")
    config = server_config(tiny_byte_checkpoint(tmp / "ckpt"), tmp, jobs_root=str(tmp / "jobs"),
                           data_roots=[str(tmp / "data")], max_upload_bytes=1000)
    with ServerThread(config, load_default=False) as server, \
            GatewayThread(server.target) as gateway, \
            httpx2.Client(base_url=gateway.url, timeout=60) as client:
        yield client


def error(reply: httpx2.Response) -> tuple[int, dict[str, object]]:
    return reply.status_code, reply.json()["error"]


@pytest.mark.parametrize("spec", ["null", "[]", "5", '"text"'])
def test_an_upload_whose_spec_is_not_a_json_object_is_a_400(http: httpx2.Client,
                                                           spec: str) -> None:
    reply = http.post("/v1/train/jobs:upload", data={"spec": spec},
                      files={"file": ("book.txt", b"To be, or not to be" * 50)})
    assert error(reply) == (400, {
        "message": f"spec: must be a JSON object, got {spec}",
        "type": "invalid_request_error", "param": "spec", "code": None})
    assert http.get("/v1/train/jobs").json() == {"jobs": []}


def test_an_infinite_learning_rate_is_a_400_on_its_field(http: httpx2.Client) -> None:
    body = json.dumps({"spec": {**SPEC, "training": {"learning_rate": "Infinity"}}})
    reply = http.post("/v1/train/jobs", content=body,
                      headers={"content-type": "application/json"})
    assert error(reply) == (400, {
        "message": "learning_rate: must be a finite number in [0.0, inf], got inf",
        "type": "invalid_request_error", "param": "learning_rate", "code": None})
    assert http.get("/v1/train/jobs").json() == {"jobs": []}


def test_a_spec_that_is_an_object_starts_a_job(http: httpx2.Client) -> None:
    reply = http.post("/v1/train/jobs:upload", data={"spec": json.dumps(SPEC)},
                      files={"file": ("book.txt", b"To be, or not to be" * 50)})
    assert reply.status_code == 200, reply.text
    job = reply.json()["job"]
    assert job["uploaded_bytes"] == str(19 * 50)
    http.post(f"/v1/train/jobs/{job['job_id']}:cancel")


def job_ids(http: httpx2.Client) -> list[str]:
    return [job["job_id"] for job in http.get("/v1/train/jobs").json()["jobs"]]


@pytest.mark.parametrize("size", [1001, 3_000_000])
def test_an_upload_over_the_limit_is_a_400_however_large(http: httpx2.Client, size: int) -> None:
    """Over max_upload_bytes the server says so; far over it gRPC refuses the message itself
    (RESOURCE_EXHAUSTED), which is no reason to retry."""
    before = job_ids(http)
    reply = http.post("/v1/train/jobs:upload", data={"spec": json.dumps(SPEC)},
                      files={"file": ("book.txt", b"a" * size)})
    status, body = error(reply)
    assert (status, body["type"], body["param"]) == (400, "invalid_request_error", "text")
    assert "retry-after" not in reply.headers
    if size == 1001:
        assert body["message"] == "text: is 1001 bytes; the server accepts at most 1000"
    else:
        assert re.fullmatch(r"text: the request is 3000\d{3} bytes, more than the server "
                            r"accepts \(at most \d+ bytes per request\); its max_upload_bytes "
                            r"limits uploaded text", str(body["message"])), body
    assert job_ids(http) == before
