"""gateway/envoy: the templates are valid Envoy configs as shipped, and the renderer writes valid
ones with the addresses asked for (or one line on stderr, exit 2 and no file)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from envoy_harness import ENVOY, descriptor_set, need_envoy

from gateway.envoy.render import TEMPLATES, main


def validate(config: Path, cwd: Path) -> str:
    """Envoy's own verdict on a config (it also opens the descriptor set it names)."""
    need_envoy()
    done = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(config),
                           "--disable-hot-restart", "-l", "error"],
                          cwd=cwd, capture_output=True, text=True, timeout=60)
    return done.stdout.strip() + done.stderr.strip()


@pytest.mark.parametrize("template", ["transcoder", "balancer"])
def test_templates_are_valid_as_shipped(template: str, tmp_path: Path) -> None:
    # Run from a folder holding build/nanollm.pb, as from the repository root after make proto.
    descriptor_set(tmp_path / "build" / "nanollm.pb")
    path = TEMPLATES / f"{template}.yaml"
    assert validate(path, tmp_path) == f"configuration '{path}' OK"


def endpoints(config: dict) -> list[tuple[str, int]]:
    (cluster,) = config["static_resources"]["clusters"]
    (group,) = cluster["load_assignment"]["endpoints"]
    return [(e["endpoint"]["address"]["socket_address"]["address"],
             e["endpoint"]["address"]["socket_address"]["port_value"])
            for e in group["lb_endpoints"]]


def listen_and_admin(config: dict) -> tuple[dict, dict]:
    return (config["static_resources"]["listeners"][0]["address"]["socket_address"],
            config["admin"]["address"]["socket_address"])


def test_rendered_transcoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = descriptor_set(tmp_path / "proto" / "nanollm.pb")
    out = tmp_path / "out" / "transcoder.yaml"
    assert main(["transcoder", "--listen", "0.0.0.0:8000", "--admin", "127.0.0.1:9000",
                 "--upstream", "10.0.0.5:50051", "--upstream", "[::1]:6000",
                 "--descriptor-set", str(pb), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.read_text().startswith(
        "# Written by python -m gateway.envoy.render from gateway/envoy/transcoder.yaml\n")
    config = yaml.safe_load(out.read_text())
    assert listen_and_admin(config) == ({"address": "0.0.0.0", "port_value": 8000},
                                        {"address": "127.0.0.1", "port_value": 9000})
    assert endpoints(config) == [("10.0.0.5", 50051), ("::1", 6000)]
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    transcoder = manager["typed_config"]["http_filters"][0]["typed_config"]
    assert transcoder["proto_descriptor"] == str(pb.resolve())
    assert validate(out, Path("/")) == f"configuration '{out}' OK"
    # In a container Envoy reads the set from where it is mounted, not from where it was built.
    assert main(["transcoder", "--descriptor-set", str(pb), "--descriptor-set-in-envoy",
                 "/etc/envoy/nanollm.pb", "-o", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    transcoder = manager["typed_config"]["http_filters"][0]["typed_config"]
    assert transcoder["proto_descriptor"] == "/etc/envoy/nanollm.pb"


def test_rendered_balancer(tmp_path: Path) -> None:
    out = tmp_path / "balancer.yaml"
    assert main(["balancer", "--listen", "127.0.0.1:0", "--replica", "127.0.0.1:7001",
                 "--replica", "127.0.0.1:7002", "--replica", "replica-3:7003",
                 "--health-interval", "0.25", "-o", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    assert listen_and_admin(config) == ({"address": "127.0.0.1", "port_value": 0},
                                        {"address": "127.0.0.1", "port_value": 9902})
    assert endpoints(config) == [("127.0.0.1", 7001), ("127.0.0.1", 7002), ("replica-3", 7003)]
    (check,) = config["static_resources"]["clusters"][0]["health_checks"]
    assert (check["interval"], check["no_traffic_interval"], check["timeout"]) == (
        "0.250s", "0.250s", "1.000s")
    assert check["grpc_health_check"] == {"service_name": "nanollm.v1.GenerateService"}
    assert validate(out, tmp_path) == f"configuration '{out}' OK"


@pytest.mark.parametrize(("args", "message"), [
    ([], "the following arguments are required: {transcoder,balancer}"),
    # argparse words the rest of this one differently across Python versions
    (["grpc", "-o", "OUT"], "argument {transcoder,balancer}: invalid choice: 'grpc'"),
    (["balancer"], "the following arguments are required: -o/--output"),
    (["balancer", "--replica", "localhost", "-o", "OUT"],
     "--replica 'localhost' is not host:port"),
    (["balancer", "--replica", "h:0", "-o", "OUT"], "--replica 'h:0': port must be in [1, 65535]"),
    (["balancer", "--listen", "h:70000", "-o", "OUT"],
     "--listen 'h:70000': port must be in [0, 65535]"),
    (["balancer", "--health-interval", "0", "-o", "OUT"],
     "--health-interval 0 must be in [0.01, 3600] s"),
    (["transcoder", "--upstream", ":50051", "-o", "OUT"], "--upstream ':50051' is not host:port"),
    (["transcoder", "--descriptor-set", "missing.pb", "-o", "OUT"],
     "descriptor set missing.pb does not exist: run make proto"),
])
def test_bad_command_lines_exit_2_with_one_line_and_write_nothing(
        args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "envoy.yaml"
    assert main([str(out) if a == "OUT" else a for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.endswith("\n")
    assert captured.err.startswith(f"python -m gateway.envoy.render: error: {message}")
    assert list(tmp_path.iterdir()) == []
