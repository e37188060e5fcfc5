"""What the web UI (gateway/static/) needs to know about this gateway that no API route says:
the gRPC address it forwards to, so the API page can fill its grpcurl and Python-client
examples in.

    GET /ui/config  ->  {"grpc_target": "127.0.0.1:50051", "grpc_tls": false}
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(include_in_schema=False)


@router.get("/ui/config")
async def ui_config(request: Request) -> JSONResponse:
    backend = request.app.state.settings.backend
    return JSONResponse({"grpc_target": backend.target, "grpc_tls": backend.tls})
