"""`gpt-server` with API keys, CORS and TLS, and its gateway-only mode: keys configured on the
server hold on every REST route (the gateway forwards the Bearer header, gRPC checks it), in
the built-in gateway and in one started apart with --grpc-target; TLS covers both ports."""

from __future__ import annotations

import shutil
import ssl
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from serve_process import GptServerProcess
from server_harness import tiny_byte_checkpoint

USER, ADMIN = "user-key-7", "admin-key-7"
APP = "https://app.example.com"
COMPLETION = {"model": "gpt", "prompt": "hi", "max_tokens": 2, "stop_at_eos": False}
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

# (method, path, JSON body, status with no key, with the user key, with the admin key)
ROUTES = [
    ("POST", "/v1/completions", COMPLETION, 401, 200, 200),
    ("POST", "/v1/chat/completions", CHAT, 401, 200, 200),
    ("GET", "/v1/models", None, 401, 200, 200),
    ("GET", "/v1/models/gpt", None, 401, 200, 200),
    ("POST", "/tokenize", {"model": "gpt", "prompt": "hi"}, 401, 200, 200),
    ("POST", "/detokenize", {"model": "gpt", "tokens": [104, 105]}, 401, 200, 200),
    ("GET", "/v1/admin/models", None, 401, 200, 200),
    ("POST", "/v1/admin/models/gpt:setDefault", None, 401, 403, 200),
    ("POST", "/v1/admin/models", {"name": "x", "path": "missing"}, 401, 403, 404),
    ("GET", "/v1/train/jobs", None, 401, 403, 200),
    ("GET", "/v1/train/jobs/20260101-000000-abcdef", None, 401, 403, 404),
]
OPEN = ["/health", "/ready", "/", "/docs", "/openapi.json", "/metrics"]


def server_args(tmp: Path, *extra: str) -> list[str]:
    checkpoint = tiny_byte_checkpoint(tmp / "tiny", block_size=128)
    return ["--checkpoint", str(checkpoint), "--model-root", str(tmp), "--port", "0",
            "--grpc-port", "0", "--metrics-port", "-1", "--device", "cpu", "--grace-period", "5",
            *extra]


def statuses(base: str, key: str | None, verify: bool | ssl.SSLContext = True) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx2.Client(base_url=base, headers=headers, timeout=60, verify=verify) as http:
        return [http.request(method, path, json=body).status_code
                for method, path, body, *_ in ROUTES]


def expected(column: int) -> list[int]:
    return [route[3 + column] for route in ROUTES]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GptServerProcess]:
    tmp = tmp_path_factory.mktemp("keyed")
    args = server_args(tmp, "--api-key", USER, "--admin-key", ADMIN, "--cors-origin", APP)
    with GptServerProcess(args, cwd=tmp) as server:
        server.wait_ready()
        yield server
        assert server.stop() == 0


def test_keys_hold_on_every_rest_route(keyed: GptServerProcess) -> None:
    base = keyed.rest_url
    assert statuses(base, None) == expected(0)
    assert statuses(base, USER) == expected(1)
    assert statuses(base, ADMIN) == expected(2)
    assert statuses(base, "not-a-key") == expected(0)
    for path in OPEN:  # probes, the page and the docs need no key
        assert httpx2.get(f"{base}{path}").status_code == 200, path
    refused = httpx2.post(f"{base}/v1/completions", json=COMPLETION).json()["error"]
    assert refused["type"] == "authentication_error"
    assert any('-H "Authorization: Bearer $API_KEY"' in line for line in keyed.lines)


def test_small_answers_are_not_held_back_waiting_for_acks(keyed: GptServerProcess) -> None:
    """Without TCP_NODELAY on the HTTP socket, a response written in two pieces (headers, then
    body or each streamed chunk) waits for the client's delayed ACK: about 40 ms each time."""
    with httpx2.Client(base_url=keyed.rest_url, timeout=10) as http:
        http.get("/health")  # the connection, kept alive for the timed requests
        times = []
        for _ in range(15):
            start = time.perf_counter()
            assert http.get("/health").status_code == 200
            times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.020, times


def test_cors_answers_only_the_configured_origin(keyed: GptServerProcess) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx2.options(f"{keyed.rest_url}/v1/completions",
                             headers={"Origin": APP, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    other = httpx2.options(f"{keyed.rest_url}/v1/completions",
                           headers={"Origin": "https://else.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_gateway_alone_in_front_of_a_remote_grpc_server(keyed: GptServerProcess,
                                                        tmp_path: Path) -> None:
    target = keyed.grpc_target
    with GptServerProcess(["--grpc-target", target, "--port", "0"], cwd=tmp_path) as gateway:
        gateway.wait_ready()
        base = gateway.rest_url
        assert statuses(base, None) == expected(0)
        assert statuses(base, USER) == expected(1)
        assert httpx2.get(f"{base}/ui/config").json() == {"grpc_target": target,
                                                          "grpc_tls": False}
        assert any(f"in front of the gRPC server at {target} (gateway only)" in line
                   for line in gateway.lines)
        assert not any("gRPC server listening" in line for line in gateway.lines)
        assert gateway.stop() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]  # no model, no jobs root


def test_tls_covers_grpc_and_rest(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    trust = ssl.create_default_context(cafile=str(cert))
    args = server_args(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    with GptServerProcess(args, cwd=tmp_path) as server:
        base = server.rest_url
        port = base.rsplit(":", 1)[1]
        assert base == f"https://localhost:{port}"
        server.wait_ready(verify=trust)
        # The gateway reached gRPC over TLS: completions work end to end.
        reply = httpx2.post(f"{base}/v1/completions", json=COMPLETION, verify=trust)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2
        with pytest.raises(httpx2.TransportError):  # no plaintext HTTP on the port
            httpx2.get(f"http://127.0.0.1:{port}/health")
        assert any(line.startswith(f"  curl --cacert {cert} {base}/v1/completions")
                   for line in server.lines), server.log
        assert server.stop() == 0
