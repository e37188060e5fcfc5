"""GET /health (liveness: the gateway answers) and GET /ready (readiness: the gRPC server
behind it reports SERVING through grpc.health.v1, i.e. its default model is loaded and warmed
up, and it is not draining). Neither needs an API key, so load balancers and probes can call
them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.backend import Backend

router = APIRouter(tags=["Health"])


@router.get("/health", summary="Liveness: 200 while the gateway runs")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once the gRPC server serves, else 503",
            responses={503: {"description": "the gRPC server is not serving"}})
async def ready(request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    if await backend.serving():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready",
                         "reason": f"the gRPC server at {backend.settings.target} is not "
                                   "serving (unreachable, loading its model, or draining)"},
                        status_code=503)
