"""gpt-server's process: the gRPC server and the REST gateway in one event loop, or either alone.

    exit_code = asyncio.run(serve(config))     # what gpt-server runs; SIGTERM drains both

- default: gRPC (server/app.py) and the gateway (server/embedded_gateway.py), which reaches
  gRPC over a channel to the port gRPC listens on, as a remote gateway would;
- `grpc_only`: gRPC alone (replicas behind Envoy or a Kubernetes Service);
- `grpc_target`: the gateway alone, in front of the gRPC server at that address.

Startup: the HTTP port is bound first, then the gRPC port, so a busy port fails before anything
is created. The gateway answers as soon as gRPC listens (/health 200, /ready 503 until the
default model is loaded and warmed up). Once ready, one log record lists every address (with the
bound ports when a port was 0) and a grpcurl and a curl line to try.

Shutdown on SIGTERM or SIGINT: gRPC drains first (health NOT_SERVING, so /ready turns 503; new
requests get UNAVAILABLE, which REST callers see as 503; requests in flight, REST streams
included since they ride on gRPC calls, get `grace_period` seconds), then the gateway stops.
The exit code is 0.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass

from gateway.backend import BackendSettings
from nanollm.server_config import ServerConfig
from server.embedded_gateway import EmbeddedGateway, client_address, dial_address, grpc_backend

log = logging.getLogger(__name__)

TRY_GRPC = '{"prompt": "ROMEO:", "sampling": {"max_tokens": 40}}'
TRY_REST = '{{"model": "{model}", "prompt": "ROMEO:", "max_tokens": 40}}'


@dataclass(frozen=True)
class Addresses:
    """What the startup log shows; None for a part this process does not run."""

    model: str
    grpc: str | None  # host:port a client on this machine dials
    rest: str | None  # base URL of the gateway
    metrics: str | None  # the model server's Prometheus endpoint
    tls_cert: str | None
    tls_server_name: str
    user_keys: bool  # inference calls need `authorization: Bearer <key>`


def banner(a: Addresses) -> str:
    """The addresses and a line to try for each protocol, one record for the log."""
    lines = []
    auth = ' -H "Authorization: Bearer $API_KEY"' if a.user_keys else ""
    if a.grpc is not None:
        scheme = "plaintext" if a.tls_cert is None else "TLS"
        lines.append(f"  gRPC      {a.grpc} ({scheme}; reflection on: grpcurl needs no .proto)")
    if a.rest is not None:
        lines.append(f"  REST API  {a.rest}/v1 (OpenAI-compatible; docs at {a.rest}/docs)")
        lines.append(f"  web UI    {a.rest}/")
    if a.metrics is not None or a.rest is not None:
        shown = [] if a.metrics is None else [f"{a.metrics} (model server)"]
        shown += [] if a.rest is None else [f"{a.rest}/metrics (gateway)"]
        lines.append(f"  metrics   {', '.join(shown)}")
    lines.append("Try:")
    if a.grpc is not None:
        tls = ("-plaintext" if a.tls_cert is None
               else f"-cacert {shlex.quote(a.tls_cert)} -servername {a.tls_server_name}")
        lines.append(f"  grpcurl {tls}{auth} -d '{TRY_GRPC}' {a.grpc} "
                     "nanollm.v1.GenerateService/StreamGenerate")
    if a.rest is not None:
        cacert = "" if a.tls_cert is None else f" --cacert {shlex.quote(a.tls_cert)}"
        lines.append(f"  curl{cacert} {a.rest}/v1/completions{auth} -H 'Content-Type: "
                     f"application/json' -d '{TRY_REST.format(model=a.model)}'")
    return "\n".join(lines)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(config: ServerConfig, on_listening: Callable[[], None] = lambda: None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; returns the exit code.
    `on_listening` runs once the ports are bound (the CLI starts its log file there)."""
    if config.grpc_target is not None:
        return await _serve_gateway_only(config, on_listening)
    return await _serve_grpc(config, on_listening)


async def _serve_gateway_only(config: ServerConfig, on_listening: Callable[[], None]) -> int:
    gateway = EmbeddedGateway(config)
    on_listening()
    target = config.grpc_target or ""
    await gateway.start(BackendSettings(target=target))
    log.info("REST gateway on %s, in front of the gRPC server at %s (gateway only)",
             gateway.url, target)
    log.info("/ready answers 200 while that server serves\n%s", banner(Addresses(
        model=config.model_name, grpc=None, rest=gateway.url, metrics=None,
        tls_cert=config.tls_cert, tls_server_name=config.tls_server_name,
        user_keys=False)))
    await _stop_event().wait()
    log.info("shutting down: open requests get %.0f s", config.grace_period)
    await gateway.stop(config.grace_period)
    log.info("stopped")
    return 0


async def _serve_grpc(config: ServerConfig, on_listening: Callable[[], None]) -> int:
    import torch  # the gateway-only mode runs without it

    from nanollm.device import inference_threads
    from server.app import NanoLLMServer

    gateway = None if config.grpc_only else EmbeddedGateway(config)
    try:
        server = NanoLLMServer(config)
        await server.start()
    except BaseException:
        if gateway is not None:
            gateway.close()
        raise
    on_listening()
    scheme = "TLS" if server.credentials is not None else "plaintext"
    log.info("gRPC server listening on %s (%s); loading model %r", server.address, scheme,
             config.model_name)
    grpc_host = config.grpc_host or config.host
    metrics = None
    if server.metrics_port is not None:
        metrics = (f"http://{dial_address(config.metrics_host or config.host, server.metrics_port)}"
                   "/metrics")
        log.info("Prometheus metrics on %s", metrics)
    if gateway is not None:
        backend = grpc_backend(config, server.port or 0)
        try:
            await gateway.start(backend)
        except BaseException:
            await server.shutdown(grace=0.0)
            raise
        log.info("REST gateway on %s (OpenAI API at /v1, web UI at /), in front of gRPC %s",
                 gateway.url, backend.target)
    stop = _stop_event()
    loading = asyncio.ensure_future(server.load_default_model())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if loading.done() and loading.exception() is not None:
        log.error("the default model could not be loaded: %s", loading.exception())
        await server.shutdown(grace=0.0)
        if gateway is not None:
            await gateway.stop()
        return 1
    if loading.done():
        entry = loading.result()
        if config.threads is not None or entry.device == "cpu":
            torch.set_num_threads(inference_threads(entry.parameter_count, config.threads))
        shown = Addresses(model=entry.name,
                          grpc=client_address(config, grpc_host, server.port or 0),
                          rest=None if gateway is None else gateway.url, metrics=metrics,
                          tls_cert=config.tls_cert, tls_server_name=config.tls_server_name,
                          user_keys=bool(server.keys.user_keys))
        log.info("ready: model %r serves on %s\n%s", entry.name, server.address, banner(shown))
    await stopping
    log.info("shutting down: draining (grace period %.0f s)", config.grace_period)
    loading.cancel()
    await server.shutdown(config.grace_period)
    if gateway is not None:
        await gateway.stop()
    log.info("stopped")
    return 0
