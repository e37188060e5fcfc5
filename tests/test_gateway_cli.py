"""gpt-gateway as a user runs it: a real process in front of a real gRPC server; bad command
lines are one line on stderr and exit code 2."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from server_harness import ServerThread, server_config, tiny_byte_checkpoint

GATEWAY = [sys.executable, "-m", "gateway.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("gateway_cli")
    with ServerThread(server_config(tiny_byte_checkpoint(tmp / "tiny", block_size=256),
                                    tmp)) as srv:
        yield srv


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "70000"], "argument --port: must be a port number from 0 to 65535, got "
                          "'70000'"),
    (["--request-timeout", "0"], "argument --request-timeout: must be a number of seconds > 0, "
                                 "got '0'"),
    (["--grpc-root-cert", "missing.pem"], "--grpc-root-cert: no such file: missing.pem"),
    (["--port", "-1"], "argument --port: must be a port number from 0 to 65535, got '-1'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_command_lines(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"gpt-gateway: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*GATEWAY, "--port", str(port)], capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2
    assert done.stderr == (f"gpt-gateway: error: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use\n")


def test_serves_then_stops_on_sigterm(server: ServerThread) -> None:
    process = subprocess.Popen([*GATEWAY, "--port", "0", "--grpc-target", server.target],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        end = time.monotonic() + 60
        line = ""
        while "REST gateway on" not in line and time.monotonic() < end:
            line = process.stderr.readline()
        found = re.search(r"REST gateway on (http://127\.0\.0\.1:\d+) \(API docs at /docs\), "
                          r"gRPC server " + re.escape(server.target), line)
        assert found, line
        url = found.group(1)
        health = None
        while health is None and time.monotonic() < end:  # the app starts after the log line
            try:
                health = httpx2.get(f"{url}/health")
            except httpx2.ConnectError:
                time.sleep(0.05)
        assert health is not None and health.json() == {"status": "ok"}
        reply = httpx2.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "gpt", "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 100})
        assert reply.status_code == 200
        # Sampled, so the model may end the reply itself (<|endoftext|>) before the 100 tokens.
        finish = reply.json()["choices"][0]["finish_reason"]
        used = reply.json()["usage"]["completion_tokens"]
        assert (finish, used == 100) in {("length", True), ("stop", False)} and used > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
