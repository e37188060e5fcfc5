"""The gRPC services behind the gateway, reached over one channel exactly as a remote client
would reach them.

    backend = Backend(BackendSettings(target="127.0.0.1:50051"))
    reply = await backend.unary(request, backend.generate.Generate, pb_request)
    stream = backend.stream(request, pb_request)        # a grpc.aio call; cancel() it when done

The caller's `Authorization: Bearer <key>` header is forwarded as `authorization` metadata, so
the gRPC server's key checks apply to REST callers unchanged. A unary call is cancelled when the
HTTP client disconnects before it finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from fastapi import Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nanollm.client import AsyncClient
from nanollm.client_errors import from_rpc_error
from nanollm.v1 import generate_pb2, generate_pb2_grpc, model_admin_pb2_grpc, train_pb2_grpc

T = TypeVar("T")


@dataclass(frozen=True)
class BackendSettings:
    target: str = "127.0.0.1:50051"
    tls: bool = False  # dial the gRPC server over TLS (system roots unless root_certificates)
    root_certificates: str | None = None  # PEM file of the CA that signed the server's cert
    tls_server_name: str | None = None  # the name in the server's certificate, if not target's
    timeout: float | None = None  # seconds each call may take (None: no deadline)


class ClientDisconnected(Exception):
    """The HTTP client went away before the gRPC call finished; the call was cancelled."""


async def _disconnected(request: Request) -> None:
    """Returns once the HTTP client has disconnected (the request body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Backend:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        # AsyncClient builds the channel (TLS included); its stubs take per-call metadata.
        self._client = AsyncClient(settings.target, tls=settings.tls,
                                   root_certificates=(Path(settings.root_certificates)
                                                      if settings.root_certificates else None),
                                   tls_server_name=settings.tls_server_name)
        channel = self._client.channel
        self.generate: generate_pb2_grpc.GenerateServiceStub = self._client.generate_stub
        self.admin: model_admin_pb2_grpc.ModelAdminServiceStub = self._client.admin_stub
        self.train = train_pb2_grpc.TrainServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    def call_options(self, request: Request, deadline: bool = True) -> dict[str, Any]:
        """The caller's key as gRPC metadata, and the configured deadline (unless `deadline`
        is False: a watch lasts as long as its job)."""
        auth = request.headers.get("authorization")
        metadata = (("authorization", auth),) if auth else ()
        return {"metadata": metadata, "timeout": self.settings.timeout if deadline else None}

    async def unary(self, request: Request, method: Callable[..., Any], message: Any) -> Any:
        """Call a unary RPC; NanoLLMError on a status, ClientDisconnected if the client left."""
        call = method(message, **self.call_options(request))
        return await self.until_disconnect(request, self._await(call), call.cancel)

    async def call(self, request: Request, method: Callable[..., Any], message: Any) -> Any:
        """A unary RPC that runs to its end whoever waits: a change of state (load a model,
        start a job), or a short call inside a stream, which watches the client itself."""
        return await self._await(method(message, **self.call_options(request)))

    def stream(self, request: Request, message: generate_pb2.StreamGenerateRequest
               ) -> grpc.aio.UnaryStreamCall:
        return self.generate.StreamGenerate(message, **self.call_options(request))

    @staticmethod
    async def _await(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    @staticmethod
    async def until_disconnect(request: Request, work: Awaitable[T],
                               on_disconnect: Callable[[], object]) -> T:
        """`work`'s result, unless the client disconnects first: then `on_disconnect()` runs
        (cancelling the gRPC call) and ClientDisconnected is raised."""
        task = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the gateway itself is stopping: nobody waits for the answer
            on_disconnect()
            task.cancel()
            raise
        finally:
            watch.cancel()
        if task.done():
            return task.result()
        on_disconnect()
        task.cancel()
        raise ClientDisconnected

    async def serving(self, service: str = "") -> bool:
        """Whether grpc.health.v1 reports `service` SERVING (False if unreachable)."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                            timeout=2.0)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self._client.close()
