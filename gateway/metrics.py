"""HTTP metrics of the gateway, served at GET /metrics in Prometheus' text format.

    nanollm_gateway_requests_total{method,route,status}      responses sent
    nanollm_gateway_request_duration_seconds{method,route}   until the last byte (streams too)
    nanollm_gateway_requests_in_progress{method}             requests being answered now

`route` is the route's template (/v1/models/{model_id}), or "other" for paths no route matched,
so the label set stays small whatever clients send. The model server's own metrics (queue,
time to first token, tokens) are on the gRPC server's metrics port.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["Health"])

# Seconds: a request answered from memory up to a long generation stream.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("nanollm_gateway_requests", "HTTP responses sent",
                                ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("nanollm_gateway_request_duration_seconds",
                                  "HTTP request time until the last byte was sent",
                                  ["method", "route"], buckets=BUCKETS, registry=self.registry)
        self.in_progress = Gauge("nanollm_gateway_requests_in_progress",
                                 "HTTP requests being answered", ["method"],
                                 registry=self.registry)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "other"


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware), so streams and disconnects pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        gauge = self.metrics.in_progress.labels(method)  # the route is known only after routing
        gauge.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            gauge.dec()
            route = _route(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - start)


@router.get("/metrics", summary="Prometheus metrics of the gateway")
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
