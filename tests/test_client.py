"""nanollm.client against a real server: sync and async calls, streams, admin calls, keys, TLS,
and every error raised as its own exception with the status code and decoded details.

The server (tests/server_harness.py) has API keys, 2 batch slots and room for 2 waiting
requests, so a test can fill it with one n=2 stream and two more requests.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from server_harness import ServerThread, server_config, tiny_byte_checkpoint, wait_for

from nanollm.client import (
    AlreadyExistsError,
    AsyncClient,
    Client,
    DeadlineExceededError,
    FieldViolation,
    InvalidArgumentError,
    NanoLLMError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    Sampling,
    UnauthenticatedError,
    UnavailableError,
)
from nanollm.v1 import generate_pb2, model_admin_pb2
from server.errors import CancelledError as ServerCancelled

pytestmark = pytest.mark.usefixtures("one_torch_thread")

USER, ADMIN = "user-key", "admin-key"
LONG = 4000  # tokens: more than any test waits for


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def srv(root: Path) -> Iterator[ServerThread]:
    config = server_config(tiny_byte_checkpoint(root / "tiny"), root, max_batch_size=2,
                           max_queue=2, max_tokens_limit=LONG, api_keys=[USER],
                           admin_keys=[ADMIN])
    with ServerThread(config) as server:
        yield server


@pytest.fixture
def client(srv: ServerThread) -> Iterator[Client]:
    with Client(srv.target, api_key=USER, timeout=30) as c:
        yield c


@pytest.fixture(autouse=True)
def idle_after(srv: ServerThread) -> Iterator[None]:
    yield
    wait_for(lambda: srv.engine().num_running == 0 and srv.engine().num_waiting == 0, 10,
             "the engine to be idle after the test")


def test_generate_stream_and_tokenize(client: Client) -> None:
    reply = client.generate("ROMEO:", max_tokens=12, temperature=0.0, stop_at_eos=False,
                            request_id="r-1")
    assert isinstance(reply, generate_pb2.GenerateResponse)
    assert reply.request_id == "r-1" and reply.model == "gpt"
    (choice,) = reply.choices
    assert len(choice.token_ids) == 12
    assert choice.finish_reason == generate_pb2.FINISH_REASON_LENGTH
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 12)

    # The same request streamed: the pieces add up to the same text and tokens.
    messages = list(client.stream("ROMEO:", sampling=Sampling(max_tokens=12, temperature=0.0,
                                                              stop_at_eos=False)))
    assert "".join(m.text for m in messages) == choice.text
    assert [t for m in messages for t in m.token_ids] == list(choice.token_ids)
    assert messages[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH
    assert messages[-1].timings.total_ms > 0

    ranked = client.generate("ROMEO:", max_tokens=2, temperature=0.0, logprobs=True,
                             top_logprobs=2).choices[0]
    assert [t.token_ids[0] for t in ranked.top_logprobs] == list(choice.token_ids[:2])
    assert [len(t.logprobs) for t in ranked.top_logprobs] == [2, 2]

    tokens = client.tokenize("ROMEO:")
    assert list(tokens.token_ids) == list(b"ROMEO:") and tokens.count == 6
    assert client.detokenize(tokens.token_ids).text == "ROMEO:"


def test_async_client_streams_concurrently_with_seeds(srv: ServerThread, client: Client) -> None:
    alone = [client.generate("JULIET:", max_tokens=10, seed=s, stop_at_eos=False).choices[0].text
             for s in (5, 6)]

    async def run() -> tuple[list[str], str]:
        async with AsyncClient(srv.target, api_key=USER, timeout=30) as aclient:

            async def one(seed: int) -> str:
                stream = aclient.stream("JULIET:", max_tokens=10, seed=seed, stop_at_eos=False)
                return "".join([m.text async for m in stream])

            texts = await asyncio.gather(one(5), one(6))
            reply = await aclient.generate("JULIET:", max_tokens=10, seed=5, stop_at_eos=False)
            return list(texts), reply.choices[0].text

    together, generated = asyncio.run(run())
    assert together == alone  # two streams batched together get what each gets alone
    assert generated == alone[0]


BAD_INPUTS = [
    (dict(prompt="", max_tokens=0, top_p=1.5), [
        FieldViolation("prompt", "must not be empty"),
        FieldViolation("sampling.max_tokens", "must be >= 1 (0 only with prompt_logprobs)"),
        FieldViolation("sampling.top_p", "must be in (0, 1], got 1.5")]),
    (dict(prompt="x", max_tokens=LONG + 1, n=3), [
        FieldViolation("sampling.max_tokens", f"must be <= {LONG} (the server's limit), got "
                                              f"{LONG + 1}"),
        FieldViolation("sampling.n", "must be in [1, 2] (the model's batch size), got 3")]),
]


@pytest.mark.parametrize(("kwargs", "violations"), BAD_INPUTS)
def test_bad_requests_raise_invalid_argument_with_field_violations(
        srv: ServerThread, client: Client, kwargs: dict, violations: list[FieldViolation]) -> None:
    prompt = kwargs.pop("prompt")
    with pytest.raises(InvalidArgumentError) as caught:
        client.generate(prompt, **kwargs)
    err = caught.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.field_violations == violations
    assert str(err).startswith("INVALID_ARGUMENT: ")
    assert all(v.description in str(err) for v in violations)

    # A stream fails the same way, when it is read; so does the asyncio client.
    with pytest.raises(InvalidArgumentError) as caught:
        next(client.stream(prompt, **kwargs))
    assert caught.value.field_violations == violations

    async def run() -> list[FieldViolation]:
        async with AsyncClient(srv.target, api_key=USER) as aclient:
            try:
                await aclient.generate(prompt, **kwargs)
            except InvalidArgumentError as e:
                return e.field_violations
            raise AssertionError("no error")

    assert asyncio.run(run()) == violations


def test_unknown_model_and_unknown_option(client: Client) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.generate("x", model="nope")
    assert str(caught.value) == "NOT_FOUND: model 'nope' is not loaded"
    with pytest.raises(TypeError, match="unknown sampling option 'temprature'"):
        client.generate("x", temprature=0.5)


def test_deadline_raises_deadline_exceeded(client: Client) -> None:
    with pytest.raises(DeadlineExceededError) as caught:
        client.generate("x", max_tokens=LONG, stop_at_eos=False, timeout=0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_leaving_a_stream_block_cancels_it_on_the_server(srv: ServerThread,
                                                         client: Client) -> None:
    with client.stream("x", max_tokens=LONG, stop_at_eos=False, request_id="leave") as stream:
        assert next(stream).token_ids
    wait_for(lambda: any(h.request.request_id == "leave" for h in srv.engine().recent), 5,
             "the cancelled stream to finish on the server")
    (handle,) = [h for h in srv.engine().recent if h.request.request_id == "leave"]
    assert isinstance(handle.error, ServerCancelled)
    assert handle.generated < 200


def test_full_queue_raises_resource_exhausted_with_retry_delay(srv: ServerThread,
                                                               client: Client) -> None:
    with client.stream("b", max_tokens=LONG, n=2, stop_at_eos=False) as blocker:
        next(blocker)  # both slots are taken
        waiting = [threading.Thread(target=lambda: client.generate("w", max_tokens=2))
                   for _ in range(2)]
        for t in waiting:
            t.start()
        wait_for(lambda: srv.engine().num_waiting == 2, 5, "two queued requests")
        with pytest.raises(ResourceExhaustedError) as caught:
            client.generate("one too many", max_tokens=2)
    for t in waiting:
        t.join(10)
    err = caught.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.retry_delay is not None and 0.1 <= err.retry_delay <= 30
    assert err.message == "model 'gpt' has 2 requests waiting (the queue is full); retry later"


@pytest.mark.parametrize(("key", "error", "message"), [
    (None, UnauthenticatedError, "this server needs an API key: send `authorization: Bearer "
                                 "<key>` (gRPC metadata or HTTP header)"),
    ("wrong", UnauthenticatedError, "unknown API key"),
    (USER, PermissionDeniedError, "this RPC needs the admin key; the key sent is a user key"),
])
def test_keys(srv: ServerThread, key: str | None, error: type[NanoLLMError],
              message: str) -> None:
    with Client(srv.target, api_key=key) as c:
        with pytest.raises(error) as caught:
            c.set_default_model("gpt")  # an admin RPC
        assert caught.value.message == message
        if key == USER:
            assert c.generate("x", max_tokens=1).usage.completion_tokens == 1
            assert [m.name for m in c.list_models().models] == ["gpt"]  # readable by users
        else:
            with pytest.raises(error):
                c.generate("x", max_tokens=1)


def test_admin_calls(srv: ServerThread, root: Path) -> None:
    tiny_byte_checkpoint(root / "second", seed=1)
    with Client(srv.target, api_key=ADMIN, timeout=60) as admin:
        model = admin.load_model("second", "second", max_batch_size=1)
        assert (model.name, model.state, model.max_batch_size) == (
            "second", model_admin_pb2.MODEL_STATE_READY, 1)
        with pytest.raises(AlreadyExistsError):
            admin.load_model("second", "second")
        with pytest.raises(InvalidArgumentError) as caught:
            admin.load_model("third", "/etc")
        assert [v.field for v in caught.value.field_violations] == ["path"]
        listed = admin.list_models()
        assert [m.name for m in listed.models] == ["gpt", "second"]
        assert listed.default_model == "gpt"
        assert admin.get_model("second").source_path == "second"
        with pytest.raises(NotFoundError):
            admin.get_model("nope")

        with Client(srv.target, api_key=USER) as user:
            assert user.generate("x", model="second", max_tokens=3).model == "second"
            assert admin.set_default_model("second").previous_default == "gpt"
            assert user.generate("x", max_tokens=3).model == "second"
            assert admin.set_default_model("gpt").previous_default == "second"
            assert admin.unload_model("second").name == "second"
            with pytest.raises(NotFoundError):
                user.generate("x", model="second")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    config = server_config(tiny_byte_checkpoint(tmp_path / "tiny"), tmp_path,
                           tls_cert=str(cert), tls_key=str(key))
    with ServerThread(config) as srv:
        with Client(srv.target, root_certificates=cert, tls_server_name="localhost",
                    timeout=30) as c:
            assert c.generate("x", max_tokens=2).usage.completion_tokens == 2

        async def run() -> int:
            async with AsyncClient(srv.target, root_certificates=cert.read_bytes(),
                                   tls_server_name="localhost", timeout=30) as ac:
                return len([m async for m in ac.stream("x", max_tokens=2, stop_at_eos=False)])

        assert asyncio.run(run()) >= 1
        with Client(srv.target, timeout=5) as plain, pytest.raises(UnavailableError):
            plain.generate("x", max_tokens=2)
