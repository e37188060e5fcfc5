"""The gateway's FastAPI application: OpenAI-compatible REST and the web UI's REST, translated
to the gRPC services of a nanoLLM server. It holds no model.

    app = create_app(GatewaySettings(backend=BackendSettings(target="127.0.0.1:50051")))
    uvicorn.run(app, host="127.0.0.1", port=8080)           # what gpt-gateway does

Routes: /v1/completions, /v1/chat/completions, /v1/models[/{id}], /tokenize, /detokenize
(gateway/completions.py, chat.py, models.py, tokenize.py); /v1/admin/models... (admin.py);
/v1/train/jobs... (jobs.py);
/health, /ready, /metrics; OpenAPI docs at /docs (assets served locally: no CDN); the web UI's
files under /static, its page at /.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from gateway import admin, chat, completions, health, jobs, metrics, models, tokenize, ui
from gateway.backend import Backend, BackendSettings
from gateway.errors import install_handlers
from gateway.metrics import GatewayMetrics, MetricsMiddleware

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class GatewaySettings:
    backend: BackendSettings = field(default_factory=BackendSettings)
    # Browser origins allowed to call the API from other sites; empty: CORS stays off.
    cors_origins: tuple[str, ...] = ()


def _document_errors_as_answered(app: FastAPI) -> None:
    """Drop FastAPI's default 422 from the OpenAPI schema: a body that does not validate is
    answered with a 400 OpenAI error (gateway/errors.py), which each route documents."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = default_openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: GatewaySettings, gateway_metrics: GatewayMetrics | None = None
               ) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # grpc.aio channels belong to the event loop that serves the app.
        app.state.backend = Backend(settings.backend)
        try:
            yield
        finally:
            await app.state.backend.close()

    app = FastAPIOffline(
        title="nanoLLM gateway", version="1", lifespan=lifespan, redoc_url=None,
        static_url="/docs-assets",
        description="OpenAI-compatible REST over a nanoLLM gRPC server (docs/gateway.md).")
    app.state.settings = settings
    app.state.metrics = gateway_metrics or GatewayMetrics()
    install_handlers(app)
    for module in (completions, chat, models, tokenize, admin, jobs, health, metrics, ui):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api", include_in_schema=False)
    async def api_page() -> RedirectResponse:
        """nanoLLM_gpt's API documentation address: the UI's API page (examples for this
        server; the reference is /docs)."""
        return RedirectResponse("/#api")

    _document_errors_as_answered(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
