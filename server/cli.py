"""gpt-server: serve GPT-2-family models over gRPC (GenerateService, ModelAdminService,
TrainService, health, reflection) and, in the same process, the REST gateway (OpenAI-compatible
API and web UI) in front of it, with Prometheus metrics.

    gpt-server                          # the shipped demo model: gRPC 127.0.0.1:50051, REST and
                                        # web UI http://127.0.0.1:8080, metrics :9090
    gpt-server --port 0 --grpc-port 0   # any free ports (the log shows the bound ones)
    gpt-server --checkpoint out/shakespeare/best --max-batch-size 16
    gpt-server --model-type gpt2 --device cuda --dtype bfloat16
    gpt-server --config config/server_config.yaml --grpc-port 6000   # flags override the file
    gpt-server --api-key-file keys.txt --admin-key-file admin.txt --tls-cert c.pem --tls-key k.pem
    gpt-server --grpc-only                                  # gRPC alone (replicas behind Envoy)
    gpt-server --grpc-target models.internal:50051 --port 8080  # the gateway alone
    gpt-server --jobs-root jobs --data-root data --max-concurrent-jobs 2   # training jobs

Then, from another terminal (grpcurl needs no proto files: the server has reflection):

    grpcurl -plaintext -d '{"prompt": "ROMEO:"}' 127.0.0.1:50051 \\
        nanollm.v1.GenerateService/StreamGenerate
    curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \\
        -d '{"model": "gpt", "prompt": "ROMEO:", "max_tokens": 40}'

The gateway reaches gRPC through a channel to the gRPC port, as a remote one would, so API keys
hold on every REST route too (it forwards `Authorization: Bearer <key>`). Each request is logged
(id, model, tokens, timings, status) to the console and to a rotating <log-dir>/server.log.
SIGTERM or Ctrl-C drains: health turns NOT_SERVING (/ready 503), new requests get UNAVAILABLE
(503), in-flight ones get --grace-period seconds to finish, then are cancelled; the exit code is
0. Bad flags, values or files, or a busy port give a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from nanollm.checkpoint import CheckpointError
from nanollm.config import ConfigError
from nanollm.config_io import add_config_flags, build_config, flag_overrides
from nanollm.server_config import ServerConfig

PROG = "gpt-server"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_BYTES, LOG_BACKUPS = 10_000_000, 5
# Flag spellings for list fields, which take one value per flag: --api-key A --api-key B.
RENAMED = {"api_keys": "api_key", "admin_keys": "admin_key", "model_roots": "model_root",
           "data_roots": "data_root", "cors_origins": "cors_origin"}


class UsageError(Exception):
    """A bad command line; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog="docs/server.md describes every setting.")
    parser.add_argument("--config", metavar="PATH",
                        help="ServerConfig file (YAML or JSON); flags given here override it")
    add_config_flags(parser, ServerConfig, rename=RENAMED)
    return parser


def load_config(argv: Sequence[str] | None) -> ServerConfig:
    args = build_parser().parse_args(argv)
    config = build_config(ServerConfig, args.config, flag_overrides(args, ServerConfig))
    if config.checkpoint is not None and config.model_type is not None:
        raise ConfigError("give --checkpoint or --model-type, not both")
    from nanollm.cli_paths import run_folder_hint  # imports torch: only once flags are fine
    from nanollm.device import resolve_device
    from nanollm.loader import COMPILE_REFUSED, detect_kind

    try:  # every model this server loads goes to this device: a missing GPU fails now
        resolve_device(config.device)
    except ValueError as exc:
        raise ConfigError(f"--device: {exc}") from None
    if config.compile:  # would fail every model load, the startup model's first
        raise ConfigError(f"--compile: {COMPILE_REFUSED}")
    if config.checkpoint is not None:
        hint = run_folder_hint(config.checkpoint)  # `out` or `out/ckpt.pt` of a gpt-train run
        if hint is not None:
            raise ConfigError(f"--checkpoint: {hint}")
        detect_kind(Path(config.checkpoint).expanduser())  # a missing or foreign path fails now
    return config


def console_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)


def file_logging(log_dir: str) -> None:
    """Also log to <log_dir>/server.log, rotated (called once the server listens)."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(folder / "server.log", maxBytes=LOG_BYTES,
                                                   backupCount=LOG_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
        from server.launcher import serve  # imports grpc and FastAPI: after the cheap checks

        console_logging()
        return asyncio.run(serve(config, on_listening=lambda: file_logging(config.log_dir)))
    except (UsageError, ConfigError, CheckpointError, FileNotFoundError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


if __name__ == "__main__":
    sys.exit(main())
