"""gpt-server, the command: the demo model by default, request logs, metrics, SIGTERM; bad
command lines give one line on stderr, exit code 2 and create nothing."""

from __future__ import annotations

import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import torch
from serve_process import GptServerProcess
from server_harness import greedy, stream_request, tiny_byte_checkpoint

from nanollm.v1 import generate_pb2, generate_pb2_grpc
from server.cli import main

GPT_SERVER = Path(sys.executable).parent / "gpt-server"


ServerProcess = GptServerProcess  # gpt-server in a subprocess, its log collected


def test_gpt_server_serves_the_demo_model_logs_requests_and_drains_on_sigterm(
        tmp_path: Path) -> None:
    server = ServerProcess(["--grpc-only", "--grpc-port", "0", "--metrics-port", "0",
                            "--grace-period", "30"], cwd=tmp_path)
    try:
        ready = server.wait_for_line(r"ready: model 'gpt' serves on 127\.0\.0\.1:(\d+)")
        metrics_port = server.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")[1]
        assert any("grpcurl -plaintext -d" in line for line in server.lines)
        with grpc.insecure_channel(f"127.0.0.1:{ready[1]}") as channel:
            stub = generate_pb2_grpc.GenerateServiceStub(channel)
            request = greedy("ROMEO:", 20)
            request.request_id = "cli-1"
            assert len(stub.Generate(request, timeout=30).choices[0].token_ids) == 20
            page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
            assert (b'nanollm_requests_total{code="OK",method="/nanollm.v1.GenerateService/'
                    b'Generate"} 1.0') in page

            stream = stub.StreamGenerate(stream_request("JULIET:", 300), timeout=60)
            first = next(stream)
            server.proc.send_signal(signal.SIGTERM)
            rest = list(stream)  # finishes within the grace period
            assert len(first.token_ids) + sum(len(m.token_ids) for m in rest) == 300
            assert rest[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH
        assert server.proc.wait(30) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    log = (tmp_path / "logs" / "server.log").read_text()
    assert re.search(r"Generate model=gpt request_id=cli-1 prompt_tokens=6 n=1 "
                     r"completion_tokens=20 queue_ms=[\d.]+ prefill_ms=[\d.]+ decode_ms=[\d.]+ "
                     r"total_ms=[\d.]+ status=OK", log)
    assert "nanollm/assets/demo" in log and "shutting down: draining" in log


@pytest.fixture
def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--max-batch-size", "0"], "ServerConfig.max_batch_size = 0 is out of range [1, 1024]"),
    (["--metrics-port", "-2"], "ServerConfig.metrics_port = -2 is out of range [-1, 65535]"),
    (["--checkpoint", "missing"], "missing: no such file or folder"),
    (["--checkpoint", "CKPT", "--model-type", "gpt2"],
     "give --checkpoint or --model-type, not both"),
    (["--tls-cert", "cert.pem"], "ServerConfig.tls_cert and ServerConfig.tls_key go together"),
    (["--config", "nope.yaml"], "config file nope.yaml does not exist"),
    (["--checkpoint", "CKPT", "--device", "tpu"], "--device: unknown device 'tpu'"),
    (["--checkpoint", "CKPT", "--compile"], "--compile: compile=True is not supported for "
                                            "inference"),
    (["--checkpoint", "RUN/ckpt.pt"], "--checkpoint: RUN/ckpt.pt: no such file or folder; RUN is "
                                      "a gpt-train run folder, whose checkpoints are folders: "
                                      "RUN/latest (last save, resumable)"),
    (["--config", "OLD"], "unknown ServerConfig field 'cors_enabled': use cors_origins, the list "
                          "of origins allowed (empty: CORS off)"),
    pytest.param(["--checkpoint", "CKPT", "--device", "cuda"],
                 "--device: device 'cuda' was asked for but CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    (["--checkpoint", "CKPT", "--api-key-file", "keys.txt"], "key file keys.txt cannot be read"),
    (["--checkpoint", "CKPT", "--grpc-port", "BUSY"], "cannot listen on 127.0.0.1:BUSY"),
    (["--checkpoint", "CKPT", "--grpc-port", "0", "--metrics-port", "BUSY"],
     "cannot serve metrics on 127.0.0.1:BUSY: Address already in use"),
])
def test_bad_command_lines_exit_2_with_one_line_and_create_nothing(
        args: list[str], message: str, tmp_path: Path, busy_port: tuple[socket.socket, int],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tiny_byte_checkpoint(tmp_path / "ckpt")
    run = tmp_path / "run"  # a gpt-train run folder: its checkpoints are folders
    tiny_byte_checkpoint(run / "latest")
    old = tmp_path / "old.yaml"  # a nanoLLM_gpt server file
    old.write_text("cors_enabled: true\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    port = str(busy_port[1])
    args = [a.replace("CKPT", str(ckpt)).replace("BUSY", port).replace("RUN", str(run))
            .replace("OLD", str(old)) for a in args]
    message = message.replace("RUN", str(run))
    args = [*args, "--grpc-only"] + ([] if "--metrics-port" in args else ["--metrics-port", "-1"])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpt-server: error: ")
    assert message.replace("BUSY", port) in err[0]
    assert list(work.iterdir()) == []
    busy_port[0].close()
