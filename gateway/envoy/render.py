"""Write an Envoy config for nanoLLM from a template in this folder, with your addresses.

    python -m gateway.envoy.render transcoder --listen 0.0.0.0:8081 \\
        --upstream 127.0.0.1:50051 -o build/envoy/transcoder.yaml
    python -m gateway.envoy.render balancer --listen 0.0.0.0:50050 \\
        --replica 10.0.0.5:50051 --replica 10.0.0.6:50051 -o build/envoy/balancer.yaml
    envoy -c build/envoy/balancer.yaml

The templates are complete configs for one machine (their headers show how to run them as they
are). Rendering swaps only the listener, the admin address, the upstream endpoints, the
descriptor set path and the health-check pace; routes, timeouts, retries and health checks stay
as the template says. Bad arguments give one line on stderr, exit code 2, and no file.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

TEMPLATES = Path(__file__).resolve().parent
PROG = "python -m gateway.envoy.render"
DEFAULT_DESCRIPTOR_SET = "build/nanollm.pb"

Config = dict[str, Any]


class RenderError(Exception):
    """A bad argument; reported as one line, exit code 2."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str, allow_any_port: bool = False) -> Address:
        """'host:port' or '[v6]:port'; port 0 (any free port) only where allow_any_port."""
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or any(c.isspace() for c in host) or not port.isdigit():
            raise RenderError(f"{what} {text!r} is not host:port")
        lowest = 0 if allow_any_port else 1
        if not lowest <= int(port) <= 65535:
            raise RenderError(f"{what} {text!r}: port must be in [{lowest}, 65535]")
        return cls(host, int(port))

    def to_envoy(self) -> Config:
        return {"socket_address": {"address": self.host, "port_value": self.port}}


def load_template(name: str) -> Config:
    """transcoder.yaml or balancer.yaml from this folder, parsed."""
    return yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text(encoding="utf-8"))


def _set_common(config: Config, listen: Address, admin: Address, upstreams: Sequence[Address]
                ) -> None:
    """Listener and admin addresses and the endpoints of the template's single cluster."""
    if not upstreams:
        raise RenderError("give at least one upstream gpt-server address")
    config["admin"]["address"] = admin.to_envoy()
    (listener,) = config["static_resources"]["listeners"]
    listener["address"] = listen.to_envoy()
    (cluster,) = config["static_resources"]["clusters"]
    cluster["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": a.to_envoy()}} for a in upstreams]}]


def _http_filter(config: Config, name: str) -> Config:
    (listener,) = config["static_resources"]["listeners"]
    (manager,) = listener["filter_chains"][0]["filters"]
    return next(f for f in manager["typed_config"]["http_filters"] if f["name"] == name)


def transcoder_config(upstreams: Sequence[Address], listen: Address, admin: Address,
                      descriptor_set: Path, envoy_path: str | None = None) -> Config:
    """transcoder.yaml with these addresses. Envoy reads the descriptor set from envoy_path
    (where a container mounts it), by default from descriptor_set made absolute (Envoy would
    read a relative path from its own working folder)."""
    if not descriptor_set.is_file():
        raise RenderError(f"descriptor set {descriptor_set} does not exist: run make proto")
    config = copy.deepcopy(load_template("transcoder"))
    _set_common(config, listen, admin, upstreams)
    transcoder = _http_filter(config, "envoy.filters.http.grpc_json_transcoder")
    transcoder["typed_config"]["proto_descriptor"] = envoy_path or str(descriptor_set.resolve())
    return config


def balancer_config(replicas: Sequence[Address], listen: Address, admin: Address,
                    health_interval: float) -> Config:
    """balancer.yaml with these addresses, health-checking each replica every
    health_interval seconds (idle or not)."""
    if not 0.01 <= health_interval <= 3600:
        raise RenderError(f"--health-interval {health_interval:g} must be in [0.01, 3600] s")
    config = copy.deepcopy(load_template("balancer"))
    _set_common(config, listen, admin, replicas)
    (check,) = config["static_resources"]["clusters"][0]["health_checks"]
    pace = f"{health_interval:.3f}s"
    check["interval"] = check["no_traffic_interval"] = pace
    check["timeout"] = f"{max(health_interval, 1.0):.3f}s"
    return config


def write_config(config: Config, path: Path, template: str) -> None:
    """Write atomically: Envoy (or a watcher) never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"# Written by {PROG} from gateway/envoy/{template}.yaml\n")
            yaml.safe_dump(config, out, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block
        raise RenderError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    kinds = parser.add_subparsers(dest="kind", required=True, parser_class=_Parser,
                                  metavar="{transcoder,balancer}")
    rest = kinds.add_parser("transcoder", help="JSON/HTTP (and SSE streams) in front of gRPC")
    rest.add_argument("--upstream", action="append", default=[], metavar="HOST:PORT",
                      help="gpt-server gRPC address (repeatable; default 127.0.0.1:50051)")
    rest.add_argument("--listen", default="127.0.0.1:8081", metavar="HOST:PORT",
                      help="where Envoy serves JSON (default %(default)s; port 0 = any)")
    rest.add_argument("--admin", default="127.0.0.1:9901", metavar="HOST:PORT",
                      help="Envoy's admin interface (default %(default)s)")
    rest.add_argument("--descriptor-set", default=DEFAULT_DESCRIPTOR_SET, metavar="PATH",
                      help="protobuf descriptor set from make proto (default %(default)s)")
    rest.add_argument("--descriptor-set-in-envoy", metavar="PATH",
                      help="where Envoy will read the descriptor set, when that differs (a "
                           "container's mount; default: --descriptor-set, made absolute)")
    grpc = kinds.add_parser("balancer", help="gRPC over several replicas, health-checked")
    grpc.add_argument("--replica", action="append", default=[], metavar="HOST:PORT",
                      help="gpt-server gRPC address (repeatable; default 127.0.0.1:50051 "
                           "and 127.0.0.1:50052)")
    grpc.add_argument("--listen", default="127.0.0.1:50050", metavar="HOST:PORT",
                      help="where clients reach the replicas (default %(default)s)")
    grpc.add_argument("--admin", default="127.0.0.1:9902", metavar="HOST:PORT",
                      help="Envoy's admin interface (default %(default)s)")
    grpc.add_argument("--health-interval", type=float, default=2.0, metavar="SECONDS",
                      help="seconds between health checks of each replica (default %(default)s)")
    for sub in (rest, grpc):
        sub.add_argument("-o", "--output", type=Path, required=True, metavar="PATH",
                         help="config file to write")
    return parser


def render(argv: Sequence[str] | None = None) -> tuple[str, Config, Path]:
    """The template a command line names, the config it asks for, and where to write it."""
    args = build_parser().parse_args(argv)
    listen = Address.parse(args.listen, "--listen", allow_any_port=True)
    admin = Address.parse(args.admin, "--admin", allow_any_port=True)
    if args.kind == "transcoder":
        upstreams = [Address.parse(a, "--upstream") for a in args.upstream or ["127.0.0.1:50051"]]
        config = transcoder_config(upstreams, listen, admin, Path(args.descriptor_set),
                                   args.descriptor_set_in_envoy)
    else:
        replicas = [Address.parse(a, "--replica")
                    for a in args.replica or ["127.0.0.1:50051", "127.0.0.1:50052"]]
        config = balancer_config(replicas, listen, admin, args.health_interval)
    return args.kind, config, args.output


def main(argv: Sequence[str] | None = None) -> int:
    try:
        template, config, output = render(argv)
        write_config(config, output, template)
    except RenderError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: cannot write the config: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
