"""docs/kubernetes: the example manifests use real gpt-server flags, probe real health service
names on the real ports, and the commands in envoy.yaml's header render the configs its pods
read from where they mount them."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import REPO, descriptor_set

from gateway.envoy.render import main as render
from nanollm.config_io import build_config, flag_overrides
from nanollm.server_config import ServerConfig
from server.cli import build_parser
from server.health import ADMIN_SERVICE, GENERATE_SERVICE

MANIFESTS = REPO / "docs" / "kubernetes"


def documents(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest, for each document of docs/kubernetes/<name>."""
    docs = yaml.safe_load_all((MANIFESTS / name).read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_replicas_use_real_flags_and_probe_real_services() -> None:
    manifests = documents("nanollm.yaml")
    pod = manifests[("Deployment", "nanollm")]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    program, *args = container["args"]
    assert program == "gpt-server"
    config = build_config(ServerConfig, None, flag_overrides(build_parser().parse_args(args),
                                                             ServerConfig))
    assert config.host == "0.0.0.0"
    assert container_ports(container) == {"grpc": config.grpc_port,
                                          "metrics": config.metrics_port}
    probes = {kind: container[f"{kind}Probe"]["grpc"] for kind in
              ("startup", "readiness", "liveness")}
    assert probes == {"startup": {"port": config.grpc_port, "service": GENERATE_SERVICE},
                      "readiness": {"port": config.grpc_port, "service": GENERATE_SERVICE},
                      "liveness": {"port": config.grpc_port, "service": ADMIN_SERVICE}}
    assert pod["spec"]["terminationGracePeriodSeconds"] > config.grace_period
    for service in ("nanollm-grpc", "nanollm-grpc-l4"):
        spec = manifests[("Service", service)]["spec"]
        assert spec["selector"] == pod["metadata"]["labels"]
        assert {p["targetPort"] for p in spec["ports"]} <= set(container_ports(container))
    assert manifests[("Service", "nanollm-grpc")]["spec"]["clusterIP"] == "None"


def header_commands(name: str) -> list[list[str]]:
    """The render commands of a manifest's header comment, continuation lines joined."""
    text, commands = "", []
    for line in (MANIFESTS / name).read_text().splitlines():
        if not line.startswith("#"):
            break
        text += line.lstrip("#").strip() + "\n"
    for command in text.replace("\\\n", " ").splitlines():
        if command.startswith(".venv/bin/python -m gateway.envoy.render "):
            commands.append(shlex.split(command)[3:])
    return commands


def test_envoy_pod_reads_the_configs_its_header_renders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the commands run from the repository root after make proto
    descriptor_set(tmp_path / "build" / "nanollm.pb")
    commands = header_commands("envoy.yaml")
    assert [c[0] for c in commands] == ["balancer", "transcoder"]
    for command in commands:
        assert render(command) == 0
    balancer = yaml.safe_load((tmp_path / "build/envoy/balancer.yaml").read_text())
    transcoder = yaml.safe_load((tmp_path / "build/envoy/transcoder.yaml").read_text())

    def listen_port(config: dict[str, Any]) -> int:
        return config["static_resources"]["listeners"][0]["address"]["socket_address"][
            "port_value"]

    def upstreams(config: dict[str, Any]) -> list[tuple[str, int]]:
        group = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
        return [tuple(e["endpoint"]["address"]["socket_address"].values())
                for e in group["lb_endpoints"]]

    headless = documents("nanollm.yaml")[("Service", "nanollm-grpc")]["spec"]
    assert upstreams(balancer) == [("nanollm-grpc", headless["ports"][0]["port"])]
    assert upstreams(transcoder) == [("127.0.0.1", listen_port(balancer))]

    pod = documents("envoy.yaml")[("Deployment", "nanollm-envoy")]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    for name, config in (("balancer", balancer), ("transcoder", transcoder)):
        args = containers[name]["args"]
        (mount,) = containers[name]["volumeMounts"]
        assert args[:2] == ["-c", f"{mount['mountPath']}/{name}.yaml"]
        assert list(container_ports(containers[name]).values()) == [listen_port(config)]
    manager = transcoder["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filter_config = manager["typed_config"]["http_filters"][0]["typed_config"]
    assert filter_config["proto_descriptor"] == f"{mount['mountPath']}/nanollm.pb"
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "nanollm-envoy"}}]
