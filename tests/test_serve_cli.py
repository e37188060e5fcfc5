"""`gpt-server` as one command: gRPC and the REST gateway (OpenAI API, web UI) on the shipped demo
model, driven by the OpenAI SDK, grpcurl and curl; the lines its startup log prints work as
printed; SIGTERM drains both and exits 0. Bad command lines exit 2 with one line and create
nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from openai import OpenAI
from serve_process import GptServerProcess
from server_harness import tiny_byte_checkpoint

from server.cli import main

BIN = Path(sys.executable).parent
PROMPT = "ROMEO:"


def printed_command(server: GptServerProcess, program: str) -> str:
    """The try-line for `program` (grpcurl or curl) from the startup log."""
    lines = [line.strip() for line in server.lines if line.startswith(f"  {program} ")]
    assert len(lines) == 1, server.log
    return lines[0]


def run_shell(command: str) -> str:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sse_data(lines: list[str]) -> list[str]:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def test_gpt_server_serves_grpc_rest_and_the_ui_on_the_demo_model_then_drains_both(
        tmp_path: Path) -> None:
    with GptServerProcess(["--port", "0", "--grpc-port", "0", "--metrics-port", "0"],
                          cwd=tmp_path) as server:
        server.wait_ready()
        rest, grpc_target = server.rest_url, server.grpc_target
        ready = server.wait_for_line(r"ready: model 'gpt' serves on 127\.0\.0\.1:(\d+)")
        metrics_port = server.wait_for_line(r"Prometheus metrics on http://127\.0\.0\.1:(\d+)")[1]
        assert grpc_target == f"127.0.0.1:{ready[1]}"
        assert not rest.endswith((":0", ":8080")) and rest.startswith("http://127.0.0.1:")
        for shown in (f"  gRPC      {grpc_target} (plaintext",
                      f"  REST API  {rest}/v1 (OpenAI-compatible; docs at {rest}/docs)",
                      f"  web UI    {rest}/",
                      f"  metrics   http://127.0.0.1:{metrics_port}/metrics (model server), "
                      f"{rest}/metrics (gateway)"):
            assert any(line.startswith(shown) for line in server.lines), (shown, server.log)

        # The OpenAI SDK, unchanged.
        sdk = OpenAI(base_url=f"{rest}/v1", api_key="not-needed", max_retries=0, timeout=60)
        chat = sdk.chat.completions.create(model="gpt", max_tokens=20, messages=[
            {"role": "user", "content": "Good morrow, what news?"}])
        assert (chat.object, chat.model, chat.choices[0].message.role) == (
            "chat.completion", "gpt", "assistant")
        assert 0 < chat.usage.completion_tokens <= 20
        assert [m.id for m in sdk.models.list()] == ["gpt"]

        # grpcurl and REST give the same greedy tokens: one model behind both.
        reply = json.loads(run_shell(
            f"""grpcurl -plaintext -d '{{"prompt": "{PROMPT}", "sampling": {{"max_tokens": 12, """
            f""""temperature": 0}}}}' {grpc_target} nanollm.v1.GenerateService/Generate"""))
        completion = sdk.completions.create(model="gpt", prompt=PROMPT, max_tokens=12,
                                            temperature=0)
        assert len(reply["choices"][0]["token_ids"]) == 12
        assert completion.choices[0].text == reply["choices"][0]["text"]

        # The startup log's two try-lines work as printed.
        streamed = [json.loads(line) for line in run_shell(
            printed_command(server, "grpcurl")).replace("}\n{", "}\x00{").split("\x00")]
        assert sum(len(m.get("token_ids", [])) for m in streamed) == 40
        if shutil.which("curl"):
            printed = json.loads(run_shell(printed_command(server, "curl")))
            assert (printed["object"], printed["usage"]["completion_tokens"]) == (
                "text_completion", 40)

        # The web UI, and the gRPC address it shows, which the gateway dials.
        page = httpx2.get(f"{rest}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx2.get(f"{rest}/ui/config").json() == {"grpc_target": grpc_target,
                                                          "grpc_tls": False}
        # CORS is off unless configured.
        other = httpx2.get(f"{rest}/v1/models", headers={"Origin": "https://else.example"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers

        # SIGTERM mid-stream: the stream finishes, /ready turns 503, new requests get 503.
        body = {"model": "gpt", "prompt": PROMPT, "max_tokens": 1500, "stream": True,
                "temperature": 0, "stop_at_eos": False, "stream_options": {"include_usage": True}}
        with httpx2.Client(timeout=60) as http, \
                http.stream("POST", f"{rest}/v1/completions", json=body) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for_line("shutting down: draining")
            assert http.get(f"{rest}/ready").status_code == 503
            refused = http.post(f"{rest}/v1/completions", json={"model": "gpt", "prompt": "x"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "service_unavailable"
            events = [first.removeprefix("data: "), *sse_data(list(lines))]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 1500
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        assert server.proc.wait(60) == 0
    log = (tmp_path / "logs" / "server.log").read_text()
    assert re.search(r"StreamGenerate model=gpt request_id=cmpl-\w+ prompt_tokens=6 n=1 "
                     r"completion_tokens=1500 .* status=OK", log)
    assert "nanollm/assets/demo" in log and log.rstrip().endswith("stopped")


@pytest.fixture
def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(("args", "message"), [
    (["--grpc-only", "--grpc-target", "127.0.0.1:50051"],
     "ServerConfig.grpc_only and ServerConfig.grpc_target exclude each other"),
    (["--grpc-target", "50051"], "ServerConfig.grpc_target = '50051' must be HOST:PORT"),
    (["--grpc-target", "host:0"], "ServerConfig.grpc_target = 'host:0' must be HOST:PORT"),
    (["--grpc-target", "127.0.0.1:50051", "--checkpoint", "CKPT"],
     "ServerConfig.grpc_target serves the gateway alone: the model (checkpoint, model_type) "
     "belongs to the gRPC server it names"),
    (["--cors-origin", ""], "ServerConfig.cors_origins must be a list of non-empty strings"),
    (["--port", "65536"], "ServerConfig.port = 65536 is out of range [0, 65535]"),
    (["--checkpoint", "CKPT", "--port", "BUSY"],
     "cannot listen on 127.0.0.1:BUSY: Address already in use"),
    (["--grpc-target", "127.0.0.1:50051", "--port", "BUSY"],
     "cannot listen on 127.0.0.1:BUSY: Address already in use"),
    (["--checkpoint", "CKPT", "--port", "0", "--grpc-port", "BUSY"],
     "cannot listen on 127.0.0.1:BUSY"),
    (["--checkpoint", "CKPT", "--port", "0", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
     "TLS certificate c.pem and key k.pem cannot be used: [Errno 2] No such file or directory"),
])
def test_bad_command_lines_exit_2_with_one_line_and_create_nothing(
        args: list[str], message: str, tmp_path: Path, busy_port: tuple[socket.socket, int],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tiny_byte_checkpoint(tmp_path / "ckpt")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    port = str(busy_port[1])
    args = [a.replace("CKPT", str(checkpoint)).replace("BUSY", port) for a in args]
    assert main([*args, "--metrics-port", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpt-server: error: "), err
    assert message.replace("BUSY", port) in err[0]
    assert list(work.iterdir()) == []
    busy_port[0].close()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_runs_gpt_server_on_the_demo_model() -> None:
    """`make serve` (README's main command) is the command the test above runs, with its ports
    (-o: the install stamp counts as up to date, so nothing is reinstalled)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "serve",
                           "HTTP_PORT=0", "GRPC_PORT=0", "ARGS=--metrics-port 0"],
                          cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        ".venv/bin/gpt-server --port 0 --grpc-port 0 --metrics-port 0"]
