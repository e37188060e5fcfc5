"""The OpenAI Python SDK, unchanged, against the gateway (real uvicorn) in front of a real gRPC
server: completions and chat, streamed and not, the models list, and its typed exceptions.
Texts are checked against the same request sent to the gRPC server directly."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from gateway_harness import GatewayThread
from openai import OpenAI
from server_harness import (
    ServerThread,
    queue_held,
    server_config,
    tiny_byte_checkpoint,
    wait_for,
)

from gateway.chat import END_OF_TURN, render_chat
from gateway.openai_models import ChatMessage
from nanollm.v1 import generate_pb2

USER_KEY, ADMIN_KEY = "user-key-1", "admin-key-1"


@dataclass
class Stack:
    server: ServerThread
    gateway: GatewayThread

    def sdk(self, api_key: str = "not-needed") -> OpenAI:
        # max_retries=0: the SDK would otherwise retry 429 and 5xx answers by itself.
        return OpenAI(base_url=f"{self.gateway.url}/v1", api_key=api_key, max_retries=0,
                      timeout=60)

    def direct(self, prompt: str, **sampling: object) -> generate_pb2.GenerateResponse:
        request = generate_pb2.GenerateRequest(
            prompt=prompt, sampling=generate_pb2.SamplingParams(**sampling))  # type: ignore[arg-type]
        return self.server.generate.Generate(request)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway_sdk")
    checkpoint = tiny_byte_checkpoint(tmp / "tiny", block_size=256)
    config = server_config(checkpoint, tmp, max_tokens_limit=100_000, jobs_root=str(tmp / "jobs"))
    with ServerThread(config) as server, \
            GatewayThread(server.target) as gateway:
        yield Stack(server, gateway)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API keys configured; one batch slot and one queue place, so a third request is 429."""
    tmp = tmp_path_factory.mktemp("gateway_keys")
    checkpoint = tiny_byte_checkpoint(tmp / "tiny", block_size=256)
    config = server_config(checkpoint, tmp, api_keys=[USER_KEY], admin_keys=[ADMIN_KEY],
                           max_batch_size=1, max_queue=1, max_tokens_limit=100_000,
                           jobs_root=str(tmp / "jobs"))
    with ServerThread(config) as server, GatewayThread(server.target) as gateway:
        yield Stack(server, gateway)


def test_completion_as_in_the_readme(stack: Stack) -> None:
    reply = stack.sdk().completions.create(model="gpt", prompt="Once upon a time",
                                           max_tokens=100, temperature=0.8, seed=11)
    assert isinstance(reply, openai.types.Completion)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.model == "gpt" and len(reply.choices) == 1
    direct = stack.direct("Once upon a time", max_tokens=100, temperature=0.8, seed=11)
    choice = reply.choices[0]
    assert choice.text == direct.choices[0].text
    assert choice.finish_reason == {1: "stop", 2: "length"}[direct.choices[0].finish_reason]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        direct.usage.prompt_tokens, direct.usage.completion_tokens)
    assert reply.usage.total_tokens == direct.usage.total_tokens


def test_completion_stream_matches_the_whole_answer(stack: Stack) -> None:
    whole = stack.sdk().completions.create(model="gpt", prompt="ROMEO:", max_tokens=24,
                                           temperature=0)
    chunks = list(stack.sdk().completions.create(
        model="gpt", prompt="ROMEO:", max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_as_in_the_readme(stack: Stack) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a haiku about programming."}]
    reply = stack.sdk().chat.completions.create(model="gpt", messages=messages,  # type: ignore[arg-type]
                                                seed=5)
    assert isinstance(reply, openai.types.chat.ChatCompletion)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    prompt = render_chat([ChatMessage(**m) for m in messages])  # type: ignore[arg-type]
    direct = stack.direct(prompt, seed=5, stop=[END_OF_TURN])
    message = reply.choices[0].message
    assert message.role == "assistant"
    assert message.content == direct.choices[0].text.lstrip()
    assert reply.usage is not None and reply.usage.prompt_tokens == direct.usage.prompt_tokens
    assert reply.usage.completion_tokens == direct.usage.completion_tokens == 100  # the default


def test_chat_stream_matches_the_whole_answer(stack: Stack) -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    whole = stack.sdk().chat.completions.create(model="gpt", messages=messages,  # type: ignore[arg-type]
                                                max_tokens=30, temperature=0, n=2)
    chunks = list(stack.sdk().chat.completions.create(
        model="gpt", messages=messages, max_tokens=30, temperature=0, n=2, stream=True))  # type: ignore[arg-type]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[0].delta.content == ""
        assert "".join(c.delta.content or "" for c in mine) == whole.choices[index].message.content
        assert [c.finish_reason for c in mine][-1] == "length"
        assert all(c.finish_reason is None for c in mine[:-1])


def test_models_list_and_retrieve(stack: Stack) -> None:
    client = stack.sdk()
    assert [m.id for m in client.models.list()] == ["gpt"]
    model = client.models.retrieve("gpt")
    assert (model.id, model.object, model.owned_by) == ("gpt", "model", "nanollm")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing")


def test_request_id_header_is_the_answers_id(stack: Stack) -> None:
    """The SDK's `request_id` (OpenAI's x-request-id header), streamed or not."""
    client = stack.sdk()
    raw = client.completions.with_raw_response.create(model="gpt", prompt="Hi", max_tokens=2)
    assert raw.request_id == raw.parse().id
    raw_chat = client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert raw_chat.request_id == raw_chat.parse().id
    with client.chat.completions.with_streaming_response.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
            stream=True) as streamed:
        chunks = list(streamed.parse())
        assert streamed.request_id == chunks[0].id and streamed.request_id.startswith("chatcmpl-")


def test_typed_errors(stack: Stack) -> None:
    client = stack.sdk()
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="gpt", prompt="Hi", temperature=-1, top_p=2)
    assert bad.value.status_code == 400 and bad.value.param == "temperature"
    assert bad.value.message.endswith("temperature: must be in [0, 100], got -1; "
                                      "top_p: must be in (0, 1], got 2")
    with pytest.raises(openai.BadRequestError) as long_prompt:
        client.chat.completions.create(model="gpt", messages=[{"role": "user",
                                                               "content": "x" * 300}])
    assert long_prompt.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "a"}])
    assert missing.value.code == "model_not_found"


def test_keys_are_passed_through(keyed: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as no_key:
        keyed.sdk("wrong-key").completions.create(model="gpt", prompt="Hi", max_tokens=2)
    assert no_key.value.status_code == 401 and no_key.value.code == "invalid_api_key"
    reply = keyed.sdk(USER_KEY).completions.create(model="gpt", prompt="Hi", max_tokens=2,
                                                   extra_body={"stop_at_eos": False})
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    # A user key reads the model list; changing the default model takes the admin key.
    assert [m.id for m in keyed.sdk(USER_KEY).models.list()] == ["gpt"]
    with pytest.raises(openai.PermissionDeniedError) as user_on_admin:
        keyed.sdk(USER_KEY).post("/admin/models/gpt:setDefault", body={}, cast_to=object)
    assert user_on_admin.value.status_code == 403
    keyed.sdk(ADMIN_KEY).post("/admin/models/gpt:setDefault", body={}, cast_to=object)


def test_full_queue_is_rate_limit_with_retry_after(keyed: Stack) -> None:
    # One request running and one waiting fill the one slot and the one queue place.
    with queue_held(keyed.server, USER_KEY):
        with pytest.raises(openai.RateLimitError) as full:
            keyed.sdk(USER_KEY).completions.create(model="gpt", prompt="Hi", max_tokens=2)
        assert full.value.status_code == 429 and full.value.code == "rate_limit_exceeded"
        assert int(full.value.response.headers["retry-after"]) >= 1


def test_unreachable_backend_is_503(tmp_path: Path) -> None:
    with GatewayThread("127.0.0.1:1") as gateway:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as down:
            client.completions.create(model="gpt", prompt="Hi")
    assert down.value.status_code == 503 and down.value.code == "unavailable"


def test_deadline_is_504_and_mid_stream_error_frame(stack: Stack) -> None:
    # 3 s: ample for the first token on a busy machine, far from 90,000 tokens' worth.
    with GatewayThread(stack.server.target, timeout=3.0) as gateway:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as late:
            # stop_at_eos off: a sampled end-of-text must not end the request before 3 s.
            client.completions.create(model="gpt", prompt="Hi", max_tokens=90_000,
                                      extra_body={"stop_at_eos": False})
        assert late.value.status_code == 504 and late.value.code == "timeout"
        received: list[str] = []
        with pytest.raises(openai.APIError) as mid_stream:
            for chunk in client.completions.create(model="gpt", prompt="Hi", max_tokens=90_000,
                                                   stream=True, extra_body={"stop_at_eos": False}):
                received.append(chunk.choices[0].text)
        assert received, "the stream failed before its first chunk"
        assert mid_stream.value.code == "timeout"
    engine = stack.server.engine()
    wait_for(lambda: engine.num_running == 0, timeout=30, what="the timed-out requests to end")


def test_concurrent_streams(stack: Stack) -> None:
    """Several SDK streams at once each get their own, complete answer."""
    texts: dict[int, str] = {}

    def run(i: int) -> None:
        stream = stack.sdk().completions.create(model="gpt", prompt=f"{i}:", max_tokens=20,
                                                temperature=0, stream=True)
        texts[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(4):
        assert texts[i] == stack.direct(f"{i}:", max_tokens=20, temperature=0).choices[0].text
