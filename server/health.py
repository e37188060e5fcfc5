"""grpc.health.v1 for the server: readiness, distinct from the process merely being up.

    ""                              SERVING once the default model is loaded and warmed up
    nanollm.v1.GenerateService      the same
    nanollm.v1.ModelAdminService    SERVING from the start (models can be loaded without a
                                    default one)
Everything turns NOT_SERVING, for good, when the server starts draining (SIGTERM), so a load
balancer stops sending requests while in-flight ones finish. Check, Watch and List all work;
none needs an API key. Check of a service the server does not have is NOT_FOUND, with a message
that names the ones it has.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from nanollm.v1 import generate_pb2, model_admin_pb2

GENERATE_SERVICE = generate_pb2.DESCRIPTOR.services_by_name["GenerateService"].full_name
ADMIN_SERVICE = model_admin_pb2.DESCRIPTOR.services_by_name["ModelAdminService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health(HealthServicer):
    """grpc_health's servicer plus List (its proto has the RPC, the servicer leaves it
    UNIMPLEMENTED) and a NOT_FOUND message a person can act on."""

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self._server_status.get(request.service)
        if status is None:
            known = ", ".join(repr(name) for name in sorted(self._server_status))
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no health status for service {request.service!r}; ask for "
                                f"one of {known} ('' is the whole server)")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(self, request: health_pb2.HealthListRequest,
                   context: grpc.aio.ServicerContext) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status)
            for name, status in self._server_status.items()})


class ServerHealth:
    """Owns the health servicer (create it on the server's event loop)."""

    def __init__(self) -> None:
        self.servicer = Health()

    async def update(self, default_ready: bool) -> None:
        """Set every service's status from whether the default model is READY."""
        status = SERVING if default_ready else NOT_SERVING
        await self.servicer.set("", status)
        await self.servicer.set(GENERATE_SERVICE, status)
        await self.servicer.set(ADMIN_SERVICE, SERVING)

    async def drain(self) -> None:
        """NOT_SERVING everywhere, and later updates are ignored."""
        await self.servicer.enter_graceful_shutdown()
