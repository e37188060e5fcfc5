"""The gateway's REST API over raw HTTP (what curl sees), against a real gRPC server: response
shapes and key order, SSE framing, prompt lists, echo, log-probabilities, tokenize, health,
readiness, metrics, docs, and a client that disconnects cancelling its generation."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from gateway_harness import GatewayThread
from server_harness import ServerThread, server_config, tiny_byte_checkpoint, wait_for

from nanollm.v1 import generate_pb2


@dataclass
class Stack:
    server: ServerThread
    gateway: GatewayThread
    http: httpx2.Client

    def direct(self, prompt: str, **sampling: object) -> generate_pb2.GenerateResponse:
        request = generate_pb2.GenerateRequest(
            prompt=prompt, sampling=generate_pb2.SamplingParams(**sampling))  # type: ignore[arg-type]
        return self.server.generate.Generate(request)

    def events(self, path: str, body: dict[str, object]) -> tuple[httpx2.Response, bytes]:
        with self.http.stream("POST", path, json=body) as response:
            return response, response.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway_api")
    checkpoint = tiny_byte_checkpoint(tmp / "tiny", block_size=256)
    config = server_config(checkpoint, tmp, max_tokens_limit=100_000, jobs_root=str(tmp / "jobs"))
    with ServerThread(config) as server, GatewayThread(server.target) as gateway, \
            httpx2.Client(base_url=gateway.url, timeout=60) as http:
        yield Stack(server, gateway, http)


def sse_data(body: bytes) -> list[str]:
    """The data of each event; fails unless every event is exactly `data: ...\\n\\n`."""
    assert body.endswith(b"\n\n")
    events = body[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events), body[:300]
    return [e[len(b"data: "):].decode() for e in events]


def test_readme_curl_examples(stack: Stack) -> None:
    """`curl http://localhost:8080/v1/chat/completions -d {...max_tokens: 100}` and /health."""
    reply = stack.http.post("/v1/chat/completions", headers={"Content-Type": "application/json"},
                            content=json.dumps({
                                "model": "gpt",
                                "messages": [{"role": "user", "content": "Hello!"}],
                                "temperature": 0.8, "max_tokens": 100}))
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert list(body) == ["id", "choices", "created", "model", "object", "system_fingerprint",
                          "usage"]
    assert body["object"] == "chat.completion" and body["model"] == "gpt"
    assert abs(body["created"] - time.time()) < 60
    (choice,) = body["choices"]
    assert list(choice) == ["finish_reason", "index", "logprobs", "message"]
    assert choice["message"]["role"] == "assistant" and choice["logprobs"] is None
    # Sampled, so the model may end the reply itself (<|endoftext|>) before the 100 tokens.
    used = body["usage"]["completion_tokens"]
    assert (choice["finish_reason"], used == 100) in {("length", True), ("stop", False)}
    assert 0 < used <= 100
    assert body["usage"]["total_tokens"] == sum(body["usage"][k] for k in ("prompt_tokens",
                                                                            "completion_tokens"))
    health = stack.http.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    api = stack.http.get("/api", follow_redirects=False)  # the seed's API documentation page
    assert (api.status_code, api.headers["location"]) == (307, "/#api")


def test_completion_shape_prompt_list_n_and_echo(stack: Stack) -> None:
    body = stack.http.post("/v1/completions", json={
        "model": "gpt", "prompt": ["ab", "xyz"], "n": 2, "max_tokens": 5, "temperature": 0,
        "echo": True}).json()
    assert list(body) == ["id", "choices", "created", "model", "object", "system_fingerprint",
                          "usage"]
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    for index, prompt in ((0, "ab"), (1, "ab"), (2, "xyz"), (3, "xyz")):
        choice = body["choices"][index]
        assert list(choice) == ["finish_reason", "index", "logprobs", "text"]
        expected = stack.direct(prompt, max_tokens=5, temperature=0).choices[0].text
        assert choice["text"] == prompt + expected
    assert body["usage"] == {"prompt_tokens": 2 + 3, "completion_tokens": 20,
                             "total_tokens": 25}


def test_completion_stream_framing_and_usage(stack: Stack) -> None:
    request = {"model": "gpt", "prompt": "Hi", "max_tokens": 6, "temperature": 0,
               "stream": True}
    response, raw = stack.events("/v1/completions", request)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(list(c) == ["id", "choices", "created", "model", "object",
                           "system_fingerprint"] for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == stack.direct("Hi", max_tokens=6, temperature=0).choices[0].text
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"

    _, raw = stack.events("/v1/completions", {**request, "stream_options":
                                              {"include_usage": True}})
    chunks = [json.loads(d) for d in sse_data(raw)[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 6,
                                   "total_tokens": 8}


def test_completion_stream_echo_and_prompt_list(stack: Stack) -> None:
    _, raw = stack.events("/v1/completions", {
        "model": "gpt", "prompt": ["ab", "cd"], "max_tokens": 4, "temperature": 0,
        "echo": True, "stream": True})
    chunks = [json.loads(d) for d in sse_data(raw)[:-1]]
    for index, prompt in ((0, "ab"), (1, "cd")):
        texts = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == index]
        assert texts[0] == prompt
        assert "".join(texts) == prompt + stack.direct(prompt, max_tokens=4,
                                                       temperature=0).choices[0].text


def test_chat_stream_framing(stack: Stack) -> None:
    _, raw = stack.events("/v1/chat/completions", {
        "model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(d) for d in sse_data(raw)[:-1]]
    assert all(list(c) == ["id", "choices", "created", "model", "object", "system_fingerprint",
                           "usage"]
               for c in chunks)
    assert chunks[0]["choices"] == [{"delta": {"content": "", "role": "assistant"}, "index": 0,
                                     "finish_reason": None, "logprobs": None}]
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "length" and set(last["delta"]) <= {"content"}
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in chunks[1:-2])
    assert chunks[-1]["usage"]["completion_tokens"] == 5 and chunks[-1]["choices"] == []


def test_logprobs(stack: Stack) -> None:
    direct = stack.direct("Hi", max_tokens=4, temperature=0, logprobs=True).choices[0]
    body = stack.http.post("/v1/completions", json={
        "model": "gpt", "prompt": "Hi", "max_tokens": 4, "temperature": 0,
        "logprobs": 0}).json()
    logprobs = body["choices"][0]["logprobs"]
    assert list(logprobs) == ["text_offset", "token_logprobs", "tokens", "top_logprobs"]
    assert logprobs["token_logprobs"] == pytest.approx(list(direct.logprobs))
    detok = [stack.http.post("/detokenize", json={"tokens": [t]}).json()["prompt"]
             for t in direct.token_ids]
    assert logprobs["tokens"] == detok
    assert logprobs["top_logprobs"] == [{t: lp} for t, lp in zip(
        detok, logprobs["token_logprobs"], strict=True)]
    assert logprobs["text_offset"] == [sum(len(t) for t in detok[:i]) for i in range(4)]

    chat = stack.http.post("/v1/chat/completions", json={
        "model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
        "logprobs": True}).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    assert all(list(c) == ["token", "bytes", "logprob", "top_logprobs"] for c in content)
    assert all(c["bytes"] == list(c["token"].encode()) and c["top_logprobs"] == []
               for c in content)


def test_top_logprobs_in_completions_and_chat(stack: Stack) -> None:
    """logprobs: N (completions) and top_logprobs: N (chat) give the N best alternatives at each
    position, as the server ranks them; the sampled token is among them (greedy: first)."""
    direct = stack.direct("Hi", max_tokens=3, temperature=0, logprobs=True,
                          top_logprobs=3).choices[0]

    def text(token: int) -> str:
        return stack.http.post("/detokenize", json={"tokens": [token]}).json()["prompt"]

    want = []  # token -> logprob; tokens of one text (bytes of a split character) keep the best
    for top in direct.top_logprobs:
        ranked: dict[str, object] = {}
        for t, lp in zip(top.token_ids, top.logprobs, strict=True):
            ranked.setdefault(text(t), pytest.approx(lp))
        want.append(ranked)
    body = stack.http.post("/v1/completions", json={
        "model": "gpt", "prompt": "Hi", "max_tokens": 3, "temperature": 0,
        "logprobs": 3}).json()
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["top_logprobs"] == want
    assert [next(iter(top)) for top in logprobs["top_logprobs"]] == logprobs["tokens"]

    chat = stack.http.post("/v1/chat/completions", json={
        "model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2,
        "temperature": 0, "logprobs": True, "top_logprobs": 2}).json()
    for c in chat["choices"][0]["logprobs"]["content"]:
        assert len(c["top_logprobs"]) == 2
        assert c["top_logprobs"][0] == {"token": c["token"], "bytes": c["bytes"],
                                        "logprob": c["logprob"]}
        assert c["top_logprobs"][1]["logprob"] <= c["logprob"]


def test_tokenize_and_detokenize(stack: Stack) -> None:
    tokens = stack.http.post("/tokenize", json={"model": "gpt", "prompt": "Hé"}).json()
    assert tokens == {"model": "gpt", "count": 3, "tokens": [72, 195, 169],
                      "token_strs": ["H", "\ufffd", "\ufffd"]}
    chat = stack.http.post("/tokenize", json={"messages": [{"role": "user", "content": "a"}]})
    assert chat.json()["count"] == len("User: a\n\nAssistant:")
    text = stack.http.post("/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert text == {"model": "gpt", "prompt": "Hé"}
    bad = stack.http.post("/detokenize", json={"tokens": [72, 999]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    for wrong in (["72"], [True], [72.5]):  # not read as 72 or 1
        typed = stack.http.post("/detokenize", json={"tokens": wrong})
        assert typed.status_code == 400 and typed.json()["error"]["param"] == "tokens", wrong
    assert stack.http.post("/detokenize", json={"tokens": [72.0]}).json()["prompt"] == "H"


@pytest.mark.parametrize(("path", "body", "param", "message"), [
    ("/v1/completions", {"model": "gpt", "prompt": "x", "foo": 1}, "foo",
     "foo: unrecognized request argument"),
    ("/v1/completions", {"model": "gpt"}, "prompt", "prompt: Field required"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": 0}, "max_tokens",
     "max_tokens: 0 only with echo and logprobs (to score the prompt)"),
    ("/v1/completions", {"model": "gpt", "prompt": "x", "max_tokens": -1}, "max_tokens",
     "max_tokens: Input should be greater than or equal to 0"),
    ("/v1/completions", {"model": "gpt", "prompt": ""}, "prompt", "prompt: must not be empty"),
    ("/v1/chat/completions", {"model": "gpt", "messages": []}, "messages",
     "messages: List should have at least 1 item after validation, not 0"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "tool", "content": "x"}]},
     "messages", "messages.0.role: Input should be 'system', 'developer', 'user' or "
                 "'assistant'"),
    ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": "user", "content": "x"}],
                              "stop": ["a", "b", "c", "d"]}, "stop",
     "stop: at most 3 stop sequences in a chat request (the chat template adds its own end "
     "of turn)"),
])
def test_request_errors_are_openai_errors(stack: Stack, path: str, body: dict[str, object],
                                          param: str, message: str) -> None:
    reply = stack.http.post(path, json=body)
    assert reply.status_code == 400
    assert reply.json() == {"error": {"message": message, "type": "invalid_request_error",
                                      "param": param, "code": None}}


def test_body_that_is_not_json(stack: Stack) -> None:
    reply = stack.http.post("/v1/completions", content=b"{not json",
                            headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "the request body is not valid JSON"
    unknown = stack.http.get("/v1/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "Not Found"


def test_ready_metrics_and_docs(stack: Stack) -> None:
    assert stack.http.get("/ready").json() == {"status": "ready"}
    with GatewayThread("127.0.0.1:1") as down:
        reply = httpx2.get(f"{down.url}/ready")
        assert reply.status_code == 503 and reply.json()["status"] == "not ready"
    stack.http.get("/v1/models/nope")
    metrics = stack.http.get("/metrics").text
    assert ('nanollm_gateway_requests_total{method="GET",route="/v1/models/{model_id}",'
            'status="404"} 1.0') in metrics
    assert "nanollm_gateway_request_duration_seconds_bucket" in metrics
    docs = stack.http.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert stack.http.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    paths = stack.http.get("/openapi.json").json()["paths"]
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize",
            "/detokenize", "/v1/admin/models"} <= set(paths)
    # A body that does not validate is a 400 OpenAI error: the schema documents no 422.
    completions = paths["/v1/completions"]["post"]["responses"]
    assert "400" in completions and "422" not in completions
    for route in ("/v1/completions", "/v1/chat/completions"):  # JSON, or SSE when streamed
        answer = paths[route]["post"]["responses"]["200"]["content"]
        assert set(answer) == {"application/json", "text/event-stream"}, route
    assert not [(p, m) for p, ops in paths.items() for m, op in ops.items()
                if "422" in op["responses"]]


def _send(port: int, path: str, body: dict[str, object]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "unary"])
def test_disconnect_cancels_generation(stack: Stack, stream: bool) -> None:
    engine = stack.server.engine()
    cancelled = engine.cancelled
    sock = _send(stack.gateway.port, "/v1/completions", {  # stop_at_eos off: no early end
        "model": "gpt", "prompt": "Hi", "max_tokens": 90_000, "stream": stream,
        "stop_at_eos": False})
    if stream:
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(65536)
    else:
        wait_for(lambda: engine.num_running == 1, what="the request to start generating")
        time.sleep(0.05)
    before = engine.tokens_generated
    sock.close()
    wait_for(lambda: engine.cancelled == cancelled + 1 and engine.num_running == 0,
             what="the request to be cancelled")
    after_disconnect = engine.tokens_generated - before
    # A decode step takes about a millisecond here: the cancel reached the engine within
    # some steps, not after the 90,000 tokens asked for.
    assert after_disconnect < 2000, after_disconnect
    assert engine.recent[-1].generated < 10_000
