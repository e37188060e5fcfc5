"""The REST gateway (OpenAI API and web UI) inside gpt-server's process and event loop.

    gateway = EmbeddedGateway(config)                 # binds the HTTP port, before all else
    await gateway.start(grpc_backend(config, 50051))  # answering; calls go to gRPC
    await gateway.stop(timeout=5)                     # finish or cut the open requests

It is the same FastAPI app as `gpt-gateway` and reaches the gRPC server the way a remote gateway
would: through a gRPC channel to the port gRPC listens on (over TLS when gRPC serves TLS), never
by calling the servicers. So API keys, errors, metrics and the request log are the gRPC server's,
for REST callers too. The HTTP port serves HTTPS with the same certificate when TLS is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import uvicorn

from gateway.app import GatewaySettings, create_app
from gateway.backend import BackendSettings
from gateway.cli import UsageError
from gateway.cli import bind as bind_socket
from nanollm.config import ConfigError
from nanollm.server_config import ServerConfig

# Seconds the gateway waits for its open connections once gRPC has drained: the streams have
# ended by then, so this only bounds slow readers and idle keep-alive connections.
STOP_TIMEOUT = 5.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dial_address(host: str, port: int) -> str:
    """Where this machine reaches a server bound to host:port (a wildcard: loopback)."""
    return host_port(WILDCARDS.get(host, host), port)


def client_address(config: ServerConfig, host: str, port: int) -> str:
    """host:port as clients on this machine reach a port of this server: by the certificate's
    name under TLS (the name they check), else the bound address (loopback for a wildcard)."""
    if config.tls_cert is not None:
        return host_port(config.tls_server_name, port)
    return dial_address(host, port)


def grpc_backend(config: ServerConfig, grpc_port: int) -> BackendSettings:
    """The gateway's channel to this process's gRPC port, trusting the served certificate."""
    target = dial_address(config.grpc_host or config.host, grpc_port)
    if config.tls_cert is None:
        return BackendSettings(target=target)
    return BackendSettings(target=target, tls=True, root_certificates=config.tls_cert,
                           tls_server_name=config.tls_server_name)


def _check_tls_files(cert: str, key: str) -> None:
    """The HTTPS side loads the certificate and key now: a bad pair fails before startup."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"TLS certificate {cert} and key {key} cannot be used: {exc}") from exc


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # gpt-server's event loop owns SIGTERM and SIGINT: it drains gRPC, then stops this.
        yield


class EmbeddedGateway:
    def __init__(self, config: ServerConfig) -> None:
        """Binds the HTTP port now, so a busy port fails before anything starts."""
        self.config = config
        self.tls = config.tls_cert is not None
        if config.tls_cert is not None and config.tls_key is not None:
            _check_tls_files(config.tls_cert, config.tls_key)
        try:
            self._socket = bind_socket(config.host, config.port)
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        self.port: int = self._socket.getsockname()[1]
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL as a client on this machine reaches it (the bound port)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{client_address(self.config, self.config.host, self.port)}"

    async def start(self, backend: BackendSettings) -> None:
        """Serve the app on the bound socket until stop(); returns once it answers."""
        settings = GatewaySettings(backend=backend,
                                   cors_origins=tuple(self.config.cors_origins))
        # log_level warning: gpt-server's own request log already has a line per call.
        uv_config = uvicorn.Config(create_app(settings), lifespan="on", log_config=None,
                                   log_level="warning", access_log=False,
                                   timeout_graceful_shutdown=STOP_TIMEOUT,
                                   ssl_certfile=self.config.tls_cert,
                                   ssl_keyfile=self.config.tls_key)
        self._server = _Uvicorn(uv_config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # its exception, if it has one
                raise ConfigError("the REST gateway stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, give open requests `timeout` seconds, then cancel them."""
        if self._server is None or self._task is None:
            self.close()
            return
        self._server.config.timeout_graceful_shutdown = timeout
        self._server.should_exit = True
        await self._task
        self.close()

    def close(self) -> None:
        self._socket.close()
