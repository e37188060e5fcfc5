"""gpt-gateway: serve the OpenAI-compatible REST API (and the web UI) in front of a nanoLLM gRPC
server, which may run on this machine or elsewhere.

    gpt-gateway                                         # http://127.0.0.1:8080 -> 127.0.0.1:50051
    gpt-gateway --port 8000 --grpc-target models.internal:50051 --grpc-tls
    gpt-gateway --host 0.0.0.0 --cors-origin https://app.example.com

Then:

    curl http://127.0.0.1:8080/v1/chat/completions -H "Content-Type: application/json" \\
        -d '{"model": "gpt", "messages": [{"role": "user", "content": "Hello!"}]}'

The gateway holds no model and no keys: a client's `Authorization: Bearer <key>` header is sent
on to the gRPC server, which checks it. Bad flags give a one-line message on stderr and exit
code 2. docs/gateway.md describes the API.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

PROG = "gpt-gateway"


class UsageError(Exception):
    """A bad command line; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block
        raise UsageError(message)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog="docs/gateway.md describes the API.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=_port, default=8080,
                        help="port to listen on, 0 = any free port (default: 8080)")
    parser.add_argument("--grpc-target", default="127.0.0.1:50051", metavar="HOST:PORT",
                        help="the gRPC server (default: 127.0.0.1:50051)")
    parser.add_argument("--grpc-tls", action="store_true",
                        help="reach the gRPC server over TLS")
    parser.add_argument("--grpc-root-cert", metavar="PEM",
                        help="CA certificate the gRPC server's certificate is signed by "
                             "(implies --grpc-tls; default: the system's roots)")
    parser.add_argument("--grpc-server-name", metavar="NAME",
                        help="the name in the gRPC server's certificate, if not the target's")
    parser.add_argument("--request-timeout", type=_seconds, metavar="SECONDS",
                        help="deadline of each gRPC call (default: none)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="a browser origin allowed to call the API (repeatable; default: "
                             "none, CORS off)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    return parser


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before the app starts, so a busy port is a clean error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it each streamed chunk can wait ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.grpc_root_cert is not None and not Path(args.grpc_root_cert).is_file():
            raise UsageError(f"--grpc-root-cert: no such file: {args.grpc_root_cert}")
        sock = bind(args.host, args.port)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    import uvicorn  # after the cheap checks

    from gateway.app import GatewaySettings, create_app
    from gateway.backend import BackendSettings

    backend = BackendSettings(target=args.grpc_target,
                              tls=args.grpc_tls or args.grpc_root_cert is not None,
                              root_certificates=args.grpc_root_cert,
                              tls_server_name=args.grpc_server_name,
                              timeout=args.request_timeout)
    app = create_app(GatewaySettings(backend=backend, cors_origins=tuple(args.cors_origin)))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = sock.getsockname()[:2]
    logging.getLogger(PROG).info("REST gateway on http://%s:%d (API docs at /docs), gRPC "
                                 "server %s", host, port, args.grpc_target)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again with the handler
    # found at start: these no-ops make that a normal exit (code 0, as gpt-server's).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
