"""The gateway's one error mapping (gRPC status -> OpenAI error body and HTTP code), its SSE
framing, and the OpenAI request models' translation to the contract. No server needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from pydantic import ValidationError

from gateway.chat import END_OF_TURN, RENAMES, render_chat
from gateway.errors import from_grpc
from gateway.openai_models import ChatCompletionRequest, ChatMessage, CompletionRequest
from gateway.sse import openai_events
from nanollm.client_errors import NanoLLMError, from_rpc_error

S = grpc.StatusCode


class FakeRpcError(grpc.RpcError):
    """What a failed grpc call raises: a code, details and the google.rpc trailer."""

    def __init__(self, code: grpc.StatusCode, details: str, *extra: object) -> None:
        self._code, self._details = code, details
        from google.rpc import status_pb2

        status = status_pb2.Status(code=code.value[0], message=details)
        for message in extra:
            status.details.add().Pack(message)
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
        for f, d in violations])


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


TABLE = [
    # status, details, http, type, code, param, message
    (S.INVALID_ARGUMENT, [bad_request(("sampling.top_p", "must be in (0, 1], got 3"),
                                      ("sampling.stop[1]", "must not be empty"))],
     400, "invalid_request_error", None, "top_p",
     "top_p: must be in (0, 1], got 3; stop: must not be empty"),
    (S.UNAUTHENTICATED, [], 401, "authentication_error", "invalid_api_key", None,
     "unknown API key"),
    (S.PERMISSION_DENIED, [], 403, "permission_error", "permission_denied", None,
     "unknown API key"),
    (S.NOT_FOUND, [], 404, "invalid_request_error", "model_not_found", None, "unknown API key"),
    (S.ALREADY_EXISTS, [], 409, "invalid_request_error", "already_exists", None,
     "unknown API key"),
    (S.RESOURCE_EXHAUSTED, [retry_info(2.2)], 429, "rate_limit_error", "rate_limit_exceeded",
     None, "unknown API key"),
    (S.UNAVAILABLE, [], 503, "service_unavailable", "unavailable", None, "unknown API key"),
    (S.DEADLINE_EXCEEDED, [], 504, "timeout", "timeout", None, "unknown API key"),
    (S.INTERNAL, [], 500, "server_error", "internal_error", None,
     "internal error in the model server"),
    (S.UNKNOWN, [], 500, "server_error", "internal_error", None,
     "internal error in the model server"),
]


@pytest.mark.parametrize(("status", "details", "http", "kind", "code", "param", "message"),
                         TABLE, ids=[row[0].name for row in TABLE])
def test_status_maps_to_openai_error(status: grpc.StatusCode, details: list[object], http: int,
                                     kind: str, code: str | None, param: str | None,
                                     message: str) -> None:
    text = "invalid request" if status == S.INVALID_ARGUMENT else "unknown API key"
    got_http, body, headers = from_grpc(from_rpc_error(FakeRpcError(status, text, *details)))
    assert got_http == http
    assert body == {"error": {"message": message, "type": kind, "param": param, "code": code}}
    assert headers == ({"Retry-After": "3"} if http == 429 else {})


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    for seconds, header in ((0.1, "1"), (1.0, "1"), (1.01, "2")):
        err = from_rpc_error(FakeRpcError(S.RESOURCE_EXHAUSTED, "full", retry_info(seconds)))
        assert from_grpc(err)[2] == {"Retry-After": header}
    assert from_grpc(from_rpc_error(FakeRpcError(S.RESOURCE_EXHAUSTED, "full")))[2] == {
        "Retry-After": "1"}


def test_chat_names_the_prompt_messages() -> None:
    err = from_rpc_error(FakeRpcError(S.INVALID_ARGUMENT, "invalid",
                                      bad_request(("prompt", "is 90 tokens; at most 63"))))
    _, body, _ = from_grpc(err, RENAMES)
    assert body["error"] == {"message": "messages: is 90 tokens; at most 63",  # type: ignore[index]
                             "type": "invalid_request_error", "param": "messages", "code": None}


async def _chunks(fail: grpc.RpcError | None, closed: list[bool]) -> AsyncIterator[str]:
    try:
        yield '{"n": 1}'
        yield '{"n": 2}'
        if fail is not None:
            raise from_rpc_error(fail)
    finally:
        closed.append(True)


async def _collect(events: AsyncIterator[bytes]) -> bytes:
    return b"".join([e async for e in events])


def test_sse_frames_then_done() -> None:
    closed: list[bool] = []
    body = asyncio.run(_collect(openai_events(_chunks(None, closed))))
    assert body == b'data: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n'
    assert closed == [True]


def test_sse_error_mid_stream_is_one_error_frame_then_done() -> None:
    closed: list[bool] = []
    fail = FakeRpcError(S.DEADLINE_EXCEEDED, "deadline exceeded while generating")
    body = asyncio.run(_collect(openai_events(_chunks(fail, closed))))
    frames = body.split(b"\n\n")
    assert frames[:2] == [b'data: {"n": 1}', b'data: {"n": 2}']
    assert json.loads(frames[2].removeprefix(b"data: ")) == {"error": {
        "message": "deadline exceeded while generating", "type": "timeout", "param": None,
        "code": "timeout"}}
    assert frames[3:] == [b"data: [DONE]", b""]
    assert closed == [True]


def test_sse_consumer_leaving_closes_the_chunks() -> None:
    closed: list[bool] = []

    async def leave_after_first() -> None:
        events = openai_events(_chunks(None, closed))
        assert await events.__anext__() == b'data: {"n": 1}\n\n'
        await events.aclose()  # what the response does when the client disconnects

    asyncio.run(leave_after_first())
    assert closed == [True]


def test_completion_request_sends_only_given_knobs() -> None:
    body = CompletionRequest(model="gpt", prompt="Hi", temperature=0.0, stop="\n", seed=7, n=2,
                             presence_penalty=0.5, top_k=5)
    params = body.to_sampling_params()
    assert params.max_tokens == 16  # OpenAI's default for completions
    assert (params.temperature, list(params.stop), params.seed, params.n) == (0.0, ["\n"], 7, 2)
    assert params.presence_penalty == 0.5 and params.top_k == 5
    for unset in ("top_p", "frequency_penalty", "repetition_penalty", "logprobs", "stop_at_eos"):
        assert not params.HasField(unset), unset
    assert CompletionRequest(model="gpt", prompt="x", logprobs=0).to_sampling_params().logprobs


def test_chat_request_adds_the_end_of_turn_and_prefers_max_completion_tokens() -> None:
    body = ChatCompletionRequest(model="gpt", messages=[{"role": "user", "content": "Hi"}],
                                 stop=["END"], max_tokens=5, max_completion_tokens=9)
    params = body.to_sampling_params([END_OF_TURN])
    assert list(params.stop) == ["END", "\nUser:"] and params.max_tokens == 9
    assert not ChatCompletionRequest(model="gpt", messages=[{"role": "user", "content": "Hi"}]
                                     ).to_sampling_params().HasField("max_tokens")


@pytest.mark.parametrize(("fields", "says"), [
    ({"prompt": [[1], []]}, "prompt: a token-id prompt must not be empty"),
    ({"prompt": []}, "prompt: must not be an empty list"),
    ({"logprobs": 6}, "less than or equal to 5"),
    ({"echo": True, "logprobs": 0, "stream": True}, "logprobs: with echo, only without stream"),
    ({"max_tokens": 0}, "max_tokens: 0 only with echo and logprobs"),
    ({"suffix": "x"}, "suffix: not supported"),
    ({"best_of": 3}, "best_of: only best_of equal to n"),
    ({"logit_bias": {"1": 5}}, "logit_bias: not supported"),
    ({"stream_options": {"include_usage": True}}, "stream_options: only allowed when stream"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4 stop sequences"),
    ({"tools": []}, "Extra inputs are not permitted"),
])
def test_completion_request_refuses_what_it_cannot_honour(fields: dict[str, object],
                                                          says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        CompletionRequest(model="gpt", **{"prompt": "Hi", **fields})  # type: ignore[arg-type]


def test_chat_template() -> None:
    messages = [ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="Hello!"),
                ChatMessage(role="assistant", content=[{"type": "text", "text": "Hi."}]),
                ChatMessage(role="developer", content="No lists."),
                ChatMessage(role="user", content="Bye")]
    assert render_chat(messages) == ("System: Be brief.\n\nUser: Hello!\n\nAssistant: Hi.\n\n"
                                     "System: No lists.\n\nUser: Bye\n\nAssistant:")


def test_a_fault_of_the_gateway_itself_is_an_openai_500_body() -> None:
    """Whatever a route's bug raises, the client gets an OpenAI error object (not a plain-text
    'Internal Server Error'); the details stay in the log."""
    from fastapi.testclient import TestClient

    from gateway.app import GatewaySettings, create_app

    app = create_app(GatewaySettings())

    @app.get("/v1/broken")
    async def broken() -> None:
        raise KeyError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/v1/broken")
    assert reply.status_code == 500
    assert reply.json() == {"error": {"message": "internal error in the model server",
                                      "type": "server_error", "param": None,
                                      "code": "internal_error"}}


def test_a_request_over_grpcs_message_limit_is_a_400_not_a_429() -> None:
    err = NanoLLMError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       "Sent message larger than max (8388700 vs. 4194304)")
    status, body, headers = from_grpc(err)
    assert (status, headers) == (400, {})
    assert body["error"]["message"] == ("the request is too large (Sent message larger than max "
                                        "(8388700 vs. 4194304))")
