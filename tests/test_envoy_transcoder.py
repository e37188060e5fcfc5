"""The real Envoy with gateway/envoy/transcoder.yaml in front of a real gpt-server (API keys on):
the gRPC services as JSON through their google.api.http annotations, streams as SSE, errors as
HTTP statuses with a google.rpc.Status body."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy_harness import ANY_PORT, Envoy, GptServer, descriptor_set, need_envoy
from server_harness import greedy, tiny_byte_checkpoint

from gateway.envoy.render import transcoder_config
from nanollm.v1 import generate_pb2_grpc

USER, ADMIN = "user-key", "admin-key"
PROMPT, N_TOKENS = "ROMEO:", 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GptServer, Envoy]]:
    need_envoy()
    tmp = tmp_path_factory.mktemp("envoy_transcoder")
    checkpoint = tiny_byte_checkpoint(tmp / "models" / "tiny")
    pb = descriptor_set(tmp / "proto" / "nanollm.pb")
    with GptServer(checkpoint, tmp / "server", "--api-key", USER, "--admin-key", ADMIN) as server:
        config = transcoder_config([server.address], ANY_PORT, ANY_PORT, pb)
        with Envoy(config, tmp / "envoy", "transcoder") as envoy:
            yield server, envoy


def http(envoy: Envoy, path: str, body: dict[str, Any] | None = None, key: str | None = USER,
         method: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body text) of one HTTP/1.1 request through Envoy."""
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(envoy.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["content-type"], err.read().decode()


def sampling(max_tokens: int = N_TOKENS) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "temperature": 0, "stop_at_eos": False}


def direct_greedy(server: GptServer) -> tuple[list[int], str]:
    """Token ids and text of the same greedy request sent straight to the server over gRPC."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        choice = stub.Generate(greedy(PROMPT, N_TOKENS), timeout=30,
                               metadata=[("authorization", f"Bearer {USER}")]).choices[0]
    return list(choice.token_ids), choice.text


def test_json_generate_returns_the_tokens_of_a_direct_grpc_call(
        stack: tuple[GptServer, Envoy]) -> None:
    server, envoy = stack
    status, content_type, body = http(envoy, "/v1/generate",
                                      {"prompt": PROMPT, "sampling": sampling()})
    assert (status, content_type) == (200, "application/json")
    reply = json.loads(body)
    (choice,) = reply["choices"]
    assert (choice["token_ids"], choice["text"]) == direct_greedy(server)
    assert choice["finish_reason"] == "FINISH_REASON_LENGTH"
    assert reply["usage"] == {"prompt_tokens": 6, "completion_tokens": N_TOKENS,
                              "total_tokens": 6 + N_TOKENS}
    assert reply["model"] == "gpt"
    # protobuf's JSON mapping: lowerCamelCase names are accepted too
    camel = {"prompt": PROMPT, "sampling": {"maxTokens": N_TOKENS, "temperature": 0,
                                            "stopAtEos": False}}
    status, _, body = http(envoy, "/v1/generate", camel)
    assert (status, json.loads(body)["choices"][0]["token_ids"]) == (200, choice["token_ids"])


def test_stream_generate_comes_back_as_server_sent_events(
        stack: tuple[GptServer, Envoy]) -> None:
    server, envoy = stack
    status, content_type, body = http(envoy, "/v1/generate:stream",
                                      {"prompt": PROMPT, "sampling": sampling()})
    assert (status, content_type) == (200, "text/event-stream")
    frames = body.split("\n\n")
    assert frames.pop() == ""  # the stream ends after the last frame's blank line
    assert all(frame.startswith("data: {") and "\n" not in frame for frame in frames)
    messages = [json.loads(frame.removeprefix("data: ")) for frame in frames]
    assert len(messages) == N_TOKENS  # one message per generated token
    ids, text = direct_greedy(server)
    assert [i for m in messages for i in m["token_ids"]] == ids
    assert "".join(m["text"] for m in messages) == text
    assert [m["usage"]["completion_tokens"] for m in messages] == list(range(1, N_TOKENS + 1))
    assert [m["finish_reason"] for m in messages] == (
        ["FINISH_REASON_UNSPECIFIED"] * (N_TOKENS - 1) + ["FINISH_REASON_LENGTH"])
    assert "seed" in messages[-1] and "timings" in messages[-1]


GOOD = {"prompt": PROMPT, "sampling": sampling()}


@pytest.mark.parametrize(("path", "body", "key", "status", "code", "message", "violations"), [
    ("/v1/generate", {"prompt": PROMPT, "sampling": {"max_tokens": 0, "temperature": -1}}, USER,
     400, 3, "invalid request: sampling.max_tokens: must be >= 1 (0 only with prompt_logprobs); "
     "sampling.temperature: must be in [0, 100], got -1",
     [("sampling.max_tokens", "must be >= 1 (0 only with prompt_logprobs)"),
      ("sampling.temperature", "must be in [0, 100], got -1")]),
    ("/v1/generate", {"prompt": "x" * 80}, USER, 400, 3,
     "invalid request: prompt: is 80 tokens; model 'gpt' accepts at most 63 (its context is 64)",
     [("prompt", "is 80 tokens; model 'gpt' accepts at most 63 (its context is 64)")]),
    ("/v1/generate:stream", {"prompt": PROMPT, "model": "nope"}, USER, 404, 5,
     "model 'nope' is not loaded", []),
    ("/v1/generate", GOOD, None, 401, 16,
     "this server needs an API key: send `authorization: Bearer <key>` (gRPC metadata or "
     "HTTP header)", []),
    ("/v1/generate", GOOD, "wrong", 401, 16, "unknown API key", []),
    ("/v1/admin/models/gpt:setDefault", {}, USER, 403, 7,
     "this RPC needs the admin key; the key sent is a user key", []),
    ("/v1/admin/models/nope", None, ADMIN, 404, 5,
     "no model named 'nope' (ListModels shows the loaded ones)", []),
])
def test_errors_come_back_as_their_http_status_with_the_message(
        stack: tuple[GptServer, Envoy], path: str, body: dict[str, Any] | None, key: str | None,
        status: int, code: int, message: str, violations: list[tuple[str, str]]) -> None:
    got_status, content_type, text = http(stack[1], path, body, key)
    assert (got_status, content_type) == (status, "application/json"), text
    error = json.loads(text)
    assert (error["code"], error["message"]) == (code, message)
    found = [(v["field"], v["description"]) for d in error["details"]
             if d["@type"] == "type.googleapis.com/google.rpc.BadRequest"
             for v in d["field_violations"]]
    assert found == violations


def test_a_path_that_maps_to_no_rpc_is_404(stack: tuple[GptServer, Envoy]) -> None:
    assert http(stack[1], "/v1/nothing", {}) == (
        404, "text/plain", "Could not resolve /v1/nothing to a method.")


def test_admin_models_list_and_get_with_the_admin_key(stack: tuple[GptServer, Envoy]) -> None:
    envoy = stack[1]
    status, _, body = http(envoy, "/v1/admin/models", key=ADMIN)
    assert status == 200
    listed = json.loads(body)
    assert listed["default_model"] == "gpt"
    (model,) = listed["models"]
    assert {k: model[k] for k in ("name", "state", "is_default", "n_layer", "block_size",
                                  "tokenizer")} == {
        "name": "gpt", "state": "MODEL_STATE_READY", "is_default": True, "n_layer": 2,
        "block_size": 64, "tokenizer": "byte"}
    status, _, body = http(envoy, "/v1/admin/models/gpt", key=ADMIN)
    assert (status, json.loads(body)["model"]) == (200, model)


def test_tokenize_as_json_and_native_grpc_on_the_same_port(
        stack: tuple[GptServer, Envoy]) -> None:
    server, envoy = stack
    status, _, body = http(envoy, "/v1/tokenize", {"text": "hi!"})
    assert (status, json.loads(body)["token_ids"]) == (200, [104, 105, 33])
    # gRPC clients may use the transcoder's port too: their requests pass through untouched.
    with grpc.insecure_channel(envoy.target) as channel:
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        reply = stub.Generate(greedy(PROMPT, N_TOKENS), timeout=30,
                              metadata=[("authorization", f"Bearer {USER}")])
    assert (list(reply.choices[0].token_ids), reply.choices[0].text) == direct_greedy(server)



def test_a_stream_cut_short_ends_without_a_finish_reason(stack: tuple[GptServer, Envoy]) -> None:
    """HTTP/1.1 cannot carry the gRPC status of a stream that already began: the SSE stream
    just ends, and its last message has no finish_reason (docs/deployment.md says so)."""
    envoy = stack[1]
    request = urllib.request.Request(
        envoy.url + "/v1/generate:stream", method="POST",
        data=json.dumps({"prompt": PROMPT, "sampling": {"max_tokens": 4000,
                                                        "stop_at_eos": False}}).encode(),
        headers={"authorization": f"Bearer {USER}", "grpc-timeout": "300m"})
    with urllib.request.urlopen(request, timeout=30) as response:
        status, body = response.status, response.read().decode()
    messages = [json.loads(f.removeprefix("data: ")) for f in body.split("\n\n") if f]
    assert status == 200 and 0 < len(messages) < 4000
    assert {m["finish_reason"] for m in messages} == {"FINISH_REASON_UNSPECIFIED"}
