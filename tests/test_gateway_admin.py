"""The web UI's REST (models and training jobs) through the gateway (real uvicorn) to a real gRPC
server running real training jobs: load, list, set default, unload; start a job on an uploaded
text file, follow its events over SSE, load its model by job id, cancel, resume, delete."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from gateway_harness import GatewayThread
from server_harness import ServerThread, server_config, tiny_byte_checkpoint

CORPUS = Path(__file__).resolve().parent.parent / "nanollm" / "assets" / "corpus" / \
    "shakespeare.txt"
TINY_JOB = {"name": "tiny", "device": "cpu",
            "scratch": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                        "tokenizer": "byte"},
            "training": {"max_iters": 12, "batch_size": 4, "eval_interval": 6, "eval_iters": 2,
                         "log_interval": 1, "warmup_iters": 2, "learning_rate": 3e-3,
                         "dtype": "float32", "seed": 7}}


@dataclass
class Stack:
    server: ServerThread
    http: httpx2.Client
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway_admin")
    (tmp / "data").mkdir()
    config = server_config(tiny_byte_checkpoint(tmp / "tiny"), tmp, jobs_root=str(tmp / "jobs"),
                           data_roots=[str(tmp / "data")])
    with ServerThread(config) as server, GatewayThread(server.target) as gateway, \
            httpx2.Client(base_url=gateway.url, timeout=120) as http:
        yield Stack(server, http, tmp)


def error_of(reply: httpx2.Response) -> tuple[int, str | None, str]:
    error = reply.json()["error"]
    return reply.status_code, error["code"], error["message"]


def test_models_load_default_and_unload(stack: Stack) -> None:
    tiny_byte_checkpoint(stack.root / "second", seed=1)
    loaded = stack.http.post("/v1/admin/models", json={"name": "second", "path": "second"})
    assert loaded.status_code == 200
    model = loaded.json()["model"]
    assert (model["name"], model["state"], model["is_default"]) == ("second",
                                                                    "MODEL_STATE_READY", False)
    assert (model["n_layer"], model["vocab_size"], model["tokenizer"]) == (2, 257, "byte")
    listing = stack.http.get("/v1/admin/models").json()
    assert [m["name"] for m in listing["models"]] == ["gpt", "second"]
    assert listing["default_model"] == "gpt"
    assert stack.http.get("/v1/admin/models/second").json()["model"]["source_path"] == "second"

    again = stack.http.post("/v1/admin/models", json={"name": "second", "path": "second"})
    assert error_of(again)[:2] == (409, "already_exists")
    bad = stack.http.post("/v1/admin/models", json={"name": "-x", "path": "second"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    both = stack.http.post("/v1/admin/models", json={"name": "x", "path": "a", "job_id": "b"})
    assert error_of(both) == (400, None, "path: give either path or job_id")

    switched = stack.http.post("/v1/admin/models/second:setDefault").json()
    assert (switched["model"]["is_default"], switched["previous_default"]) == (True, "gpt")
    chat = stack.http.post("/v1/completions", json={"model": "", "prompt": "a", "max_tokens": 2})
    assert chat.json()["model"] == "second"
    stack.http.post("/v1/admin/models/gpt:setDefault")

    gone = stack.http.delete("/v1/admin/models/second", params={"cancel_inflight": "true"})
    assert gone.json() == {"name": "second", "completed_requests": 0, "cancelled_requests": 0}
    assert error_of(stack.http.get("/v1/admin/models/second"))[:2] == (404, "model_not_found")
    assert [m["id"] for m in stack.http.get("/v1/models").json()["data"]] == ["gpt"]


def watch(stack: Stack, job_id: str, http: httpx2.Client | None = None
          ) -> list[dict[str, object]]:
    """Every event of a job's watch stream, until [DONE] (the job has ended)."""
    with (http or stack.http).stream("GET", f"/v1/train/jobs/{job_id}:watch") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        body = reply.read().decode()
    events = [e.removeprefix("data: ") for e in body.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_training_job_uploaded_watched_loaded(stack: Stack) -> None:
    text = CORPUS.read_bytes()[:60_000]
    started = stack.http.post("/v1/train/jobs:upload", data={"spec": json.dumps(TINY_JOB)},
                              files={"file": ("input.txt", text, "text/plain")})
    assert started.status_code == 200, started.text
    job = started.json()["job"]
    assert job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
    assert job["uploaded_bytes"] == str(len(text))  # uint64: a string in protobuf's JSON

    # Watched through a gateway whose calls have a 1 s deadline: a watch has none (the job,
    # from process start to its end, takes longer).
    with GatewayThread(stack.server.target, timeout=1.0) as timed, \
            httpx2.Client(base_url=timed.url, timeout=120) as http:
        events = watch(stack, job["job_id"], http)
    assert "snapshot" in events[0] and not any("error" in e for e in events)
    steps = [e["step"]["step"] for e in events if "step" in e]
    steps = [s["step"] for s in events[0]["snapshot"].get("steps", [])] + steps  # type: ignore[union-attr]
    assert [int(s) for s in steps] == list(range(1, 13))
    evals = [e["eval"] for e in events if "eval" in e]
    assert evals and all("val_loss" in e and "train_loss" in e for e in evals)  # type: ignore[operator]
    states = [e["state_change"]["state"] for e in events if "state_change" in e]
    assert states[-1] == "JOB_STATE_SUCCEEDED"

    done = stack.http.get(f"/v1/train/jobs/{job['job_id']}").json()["job"]
    assert (done["state"], done["step"]) == ("JOB_STATE_SUCCEEDED", "12")
    listed = stack.http.get("/v1/train/jobs", params={"states": "JOB_STATE_SUCCEEDED"})
    assert job["job_id"] in [j["job_id"] for j in listed.json()["jobs"]]

    loaded = stack.http.post("/v1/admin/models", json={"name": "trained",
                                                       "job_id": job["job_id"]})
    assert loaded.status_code == 200, loaded.text
    reply = stack.http.post("/v1/completions", json={"model": "trained", "prompt": "ROMEO:",
                                                     "max_tokens": 8, "stop_at_eos": False})
    assert reply.json()["usage"]["completion_tokens"] == 8
    stack.http.delete("/v1/admin/models/trained")


def test_job_errors_cancel_resume_delete(stack: Stack) -> None:
    for suffix in ("", ":watch"):
        malformed = stack.http.get(f"/v1/train/jobs/nope-1{suffix}")
        assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "job_id"
        missing = stack.http.get(f"/v1/train/jobs/20261202-142501-3fa9c1{suffix}")
        assert error_of(missing) == (404, "job_not_found", "no job '20261202-142501-3fa9c1' "
                                                           "(ListJobs shows the jobs)")
    bad = stack.http.post("/v1/train/jobs", json={"spec": {**TINY_JOB, "ranks": "x"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "spec"
    bad_states = stack.http.get("/v1/train/jobs", params={"states": "NOT_A_STATE"})
    assert bad_states.status_code == 400

    (stack.root / "data" / "small.txt").write_bytes(CORPUS.read_bytes()[:60_000])
    long_job = {**TINY_JOB, "training": {**TINY_JOB["training"], "max_iters": 100_000},  # type: ignore[dict-item]
                "data": {"path": "small.txt"}}
    job = stack.http.post("/v1/train/jobs", json={"spec": long_job}).json()["job"]
    job_id = job["job_id"]
    cancelled = stack.http.post(f"/v1/train/jobs/{job_id}:cancel")
    assert cancelled.status_code == 200
    events = watch(stack, job_id)
    assert [e["state_change"]["state"] for e in events
            if "state_change" in e][-1:] == ["JOB_STATE_CANCELLED"] or \
        events[0]["snapshot"]["job"]["state"] == "JOB_STATE_CANCELLED"  # type: ignore[index]
    again = stack.http.post(f"/v1/train/jobs/{job_id}:cancel")
    assert error_of(again)[:2] == (409, "failed_precondition")

    resumed = stack.http.post(f"/v1/train/jobs/{job_id}:resume", json={"max_iters": 100_001})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["job"]["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING")
    stack.http.post(f"/v1/train/jobs/{job_id}:cancel")
    watch(stack, job_id)
    deleted = stack.http.delete(f"/v1/train/jobs/{job_id}")
    assert deleted.json() == {"job_id": job_id}
    assert error_of(stack.http.get(f"/v1/train/jobs/{job_id}"))[:2] == (404, "job_not_found")


def test_load_completes_when_the_client_leaves(stack: Stack) -> None:
    tiny_byte_checkpoint(stack.root / "third", seed=2)
    body = json.dumps({"name": "third", "path": "third"}).encode()
    url = httpx2.URL(str(stack.http.base_url))
    with socket.create_connection((url.host, url.port)) as sock:
        sock.sendall(b"POST /v1/admin/models HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = stack.http.get("/v1/admin/models/third")
        if model.status_code == 200 and model.json()["model"]["state"] == "MODEL_STATE_READY":
            break
        time.sleep(0.05)
    assert model.json()["model"]["state"] == "MODEL_STATE_READY"
    stack.http.delete("/v1/admin/models/third")
