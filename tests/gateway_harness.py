"""A real gateway (uvicorn on port 0) in a background thread, in front of a real gRPC server.

    with ServerThread(server_config(ckpt, tmp)) as srv, GatewayThread(srv.target) as gw:
        httpx2.post(f"{gw.url}/v1/completions", json={...})
        OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn

from gateway.app import GatewaySettings, create_app
from gateway.backend import BackendSettings
from gateway.cli import bind
from gateway.metrics import GatewayMetrics


class GatewayThread:
    def __init__(self, target: str, **backend: Any) -> None:
        self.metrics = GatewayMetrics()
        app = create_app(GatewaySettings(backend=BackendSettings(target=target, **backend)),
                         self.metrics)
        self._socket = bind("127.0.0.1", 0)  # the gateway's own socket (TCP_NODELAY)
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self._socket])), daemon=True)
        self._thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def __enter__(self) -> GatewayThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
