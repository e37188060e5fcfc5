"""The interceptor every nanollm.v1 RPC goes through: exceptions -> statuses, metrics, request log.

    server = grpc.aio.server(interceptors=[ErrorInterceptor(metrics), AuthInterceptor(keys)])

It wraps each handler (unary or server-streaming) so that:
- a ServerError becomes its rich status (server/errors.py `to_status`), and a rejection
  (queue full, invalid argument, draining, ...) is counted by reason;
- any other exception becomes INTERNAL with a generic message and is logged with its traceback;
- every RPC is counted and timed (nanollm_requests_total, nanollm_e2e_request_latency_seconds)
  and logged as one line with what the servicer noted through `note()` (request id, model,
  tokens, timings) and its status code.
Health and reflection RPCs pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.errors import INTERNAL_MESSAGE, ServerError, to_status
from server.metrics import ServerMetrics

log = logging.getLogger("server.requests")

PREFIX = "/nanollm."
# The server measures a call's deadline from when its headers arrived, so the client's timer
# fires first and the server sees a plain cancellation a little before its own deadline. One
# that comes this close to the deadline is the deadline.
DEADLINE_SLACK_S = 0.05
# What the servicer of the current call has noted for its log line.
_call_notes: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("call_notes")


def note(**fields: Any) -> None:
    """Add fields to the current RPC's log line (request_id, model, prompt_tokens, ...)."""
    notes = _call_notes.get(None)
    if notes is not None:
        notes.update(fields)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """See the module docstring."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(PREFIX):
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method))
        return handler

    def _wrap_unary(self, inner: Callable[..., Awaitable[Any]], method: str
                    ) -> Callable[..., Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self, method, context)
            try:
                return await inner(request, context)
            except BaseException as exc:  # classified, then re-raised or turned into a status
                await call.fail(exc)
                raise
            finally:
                call.finish()

        return behavior

    def _wrap_stream(self, inner: Callable[..., AsyncIterator[Any]], method: str
                     ) -> Callable[..., AsyncIterator[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = _Call(self, method, context)
            try:
                async for message in inner(request, context):
                    yield message
            except BaseException as exc:  # classified, then re-raised or turned into a status
                await call.fail(exc)
                raise
            finally:
                call.finish()

        return behavior


class _Call:
    """Bookkeeping of one RPC: its notes, start time and final status code."""

    def __init__(self, interceptor: ErrorInterceptor, method: str,
                 context: grpc.aio.ServicerContext) -> None:
        self.metrics = interceptor.metrics
        self.method = method
        self.context = context
        self.code = grpc.StatusCode.OK
        self.started = time.monotonic()
        self.notes: dict[str, Any] = {}
        self._token = _call_notes.set(self.notes)

    async def fail(self, exc: BaseException) -> None:
        """Turn `exc` into the call's status: aborts (which raises AbortError) for errors the
        servicer raised; records the code for cancellations and aborts already made."""
        if isinstance(exc, ServerError):
            self.code = exc.code
            if exc.reason is not None and exc.code is not grpc.StatusCode.NOT_FOUND:
                self.metrics.rejected(exc.reason)
            await self.context.abort_with_status(to_status(exc))
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            # A stream whose client went away ends either way: its task is cancelled, or grpc
            # stops iterating and the generator is closed at its `yield` (GeneratorExit).
            remaining = self.context.time_remaining()
            expired = remaining is not None and remaining <= DEADLINE_SLACK_S
            self.code = (grpc.StatusCode.DEADLINE_EXCEEDED if expired
                         else grpc.StatusCode.CANCELLED)
        elif isinstance(exc, grpc.aio.AbortError):
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
        elif isinstance(exc, Exception):
            log.error("%s failed", self.method, exc_info=exc)
            self.code = grpc.StatusCode.INTERNAL
            await self.context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    def finish(self) -> None:
        seconds = time.monotonic() - self.started
        self.metrics.request_done(self.method, self.code.name, seconds)
        fields = " ".join(f"{k}={_fmt(v)}" for k, v in self.notes.items())
        level = logging.WARNING if self.code is grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "%s %s status=%s ms=%.1f", self.method.rsplit("/", 1)[-1], fields,
                self.code.name, 1e3 * seconds)
        # A cancelled stream may finish in another context than the one that set the notes;
        # the variable then needs no reset there.
        with contextlib.suppress(ValueError):
            _call_notes.reset(self._token)


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
