"""The programs in clients/ run as a user runs them, against a real server with API keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import ServerThread, server_config, tiny_byte_checkpoint

REPO = Path(__file__).resolve().parent.parent
USER, ADMIN = "user-key", "admin-key"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    config = server_config(tiny_byte_checkpoint(root / "tiny"), root, api_keys=[USER],
                           admin_keys=[ADMIN])
    with ServerThread(config) as server:
        yield server


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_python_client_example(srv: ServerThread) -> None:
    done = run([sys.executable, "clients/python_client.py", "--target", srv.target,
                "--api-key", USER, "--admin-key", ADMIN, "--max-tokens", "12"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "tokenize: 6 tokens [82, 79, 77, 69, 79, 58] (model gpt)" in out
    assert re.search(r"^generate \(greedy, 12 tokens, FINISH_REASON_LENGTH, \d+ ms\): '",
                     out, re.M)
    assert re.search(r"^stream done: FINISH_REASON_LENGTH, seed 1, 12 tokens, ", out, re.M)
    assert ("bad request: INVALID_ARGUMENT\n"
            "  prompt: must not be empty\n"
            "  sampling.max_tokens: must be >= 1 (0 only with prompt_logprobs)\n"
            "  sampling.top_p: must be in (0, 1], got 1.5\n") in out
    assert "model gpt: MODEL_STATE_READY, 35744 parameters, cpu/float32 (default)" in out
    assert "set default model: gpt" in out
    # Seed 1 alone (sync) and batched with seeds 2 and 3 (async) give the same text.
    (alone,) = re.findall(r"^stream seed 1: (.*)$", out, re.M)
    (batched,) = re.findall(r"^async stream seed 1: (.*)$", out, re.M)
    assert alone == batched and len(alone) > 2


def test_python_client_example_without_the_admin_key(srv: ServerThread) -> None:
    done = run([sys.executable, "clients/python_client.py", "--target", srv.target,
                "--api-key", USER, "--max-tokens", "4"])
    assert done.returncode == 0, done.stderr
    assert "model gpt: MODEL_STATE_READY, 35744 parameters, cpu/float32 (default)" in done.stdout
    assert "set default model: PERMISSION_DENIED (pass --admin-key)" in done.stdout


def test_python_client_example_reports_a_refused_key(srv: ServerThread) -> None:
    done = run([sys.executable, "clients/python_client.py", "--target", srv.target,
                "--api-key", "wrong"])
    assert done.returncode == 1
    assert done.stderr == "python_client.py: UNAUTHENTICATED: unknown API key\n"


@pytest.mark.parametrize("keys", [["-k", USER, "-a", ADMIN], ["-k", USER]],
                         ids=["user-and-admin-key", "user-key"])
def test_grpcurl_example_uses_reflection_only(srv: ServerThread, keys: list[str]) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    done = run(["bash", "clients/grpcurl.sh", *keys, srv.target], GRPCURL=grpcurl)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    services = ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                "nanollm.v1.GenerateService", "nanollm.v1.ModelAdminService"]
    assert "\n".join(services) in out  # `list`
    assert "rpc StreamGenerate ( .nanollm.v1.StreamGenerateRequest ) returns ( stream " in out
    assert "optional float temperature = 2;" in out  # `describe nanollm.v1.SamplingParams`
    assert out.count('"status": "SERVING"') == 2  # overall and GenerateService
    assert '"count": 6' in out  # Tokenize of "ROMEO:" (bytes)
    assert '"finish_reason": "FINISH_REASON_LENGTH"' in out  # Generate and StreamGenerate
    assert '"default_model": "gpt"' in out  # ListModels: any key may read it
    # The commands are echoed for copying, with the keys masked.
    assert ("+ grpcurl -plaintext -H 'authorization: Bearer <key>' -d '{\"text\": "
            "\"ROMEO:\"}' " + srv.target + " nanollm.v1.GenerateService/Tokenize") in done.stderr
    assert USER not in done.stderr and ADMIN not in done.stderr


def test_grpcurl_example_stops_at_a_refused_call(srv: ServerThread) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    done = run(["bash", "clients/grpcurl.sh", srv.target], GRPCURL=grpcurl)
    assert done.returncode != 0
    assert '"status": "SERVING"' in done.stdout  # health and reflection need no key
    assert "Code: Unauthenticated" in done.stderr


def test_grpcurl_example_usage_error() -> None:
    done = run(["bash", "clients/grpcurl.sh", "a:1", "b:2"])
    assert done.returncode == 2
    assert done.stderr.startswith("usage: clients/grpcurl.sh [-k API_KEY]")
