"""Server-sent events as OpenAI streams them.

    data: {"id": "cmpl-...", "object": "text_completion", "choices": [...]}\\n\\n
    ...
    data: [DONE]\\n\\n

A stream that fails after it started (a deadline passes mid-generation, the server goes away)
ends with one `data: {"error": {...}}` frame, in the body gateway/errors.py gives that status,
and then `data: [DONE]`. When the client disconnects, the response stops reading the chunks and
closes their generator, whose cleanup cancels the gRPC calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Send

from gateway.errors import from_grpc
from nanollm.client_errors import NanoLLMError

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def id_header(request_id: str | None) -> dict[str, str]:
    """OpenAI names each answer's id in `x-request-id` (the SDK's `request_id`)."""
    return {"x-request-id": request_id} if request_id else {}


def frame(data: str) -> bytes:
    """One event holding a JSON text (which never contains a newline)."""
    return b"data: " + data.encode("utf-8") + b"\n\n"


async def openai_events(chunks: AsyncIterator[str], renames: Mapping[str, str] | None = None,
                        not_found: str = "model_not_found") -> AsyncIterator[bytes]:
    """Each JSON chunk as an event, then [DONE]; a gRPC error becomes one error event."""
    try:
        async for chunk in chunks:
            yield frame(chunk)
    except NanoLLMError as err:
        _, body, _ = from_grpc(err, renames, not_found)
        log.info("stream ended by %s: %s", err.code.name, err.message)
        yield frame(json.dumps(body))
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    yield DONE


# The OpenAPI description of a route's answer to `"stream": true` (beside its JSON answer).
STREAMED: dict[int | str, dict[str, Any]] = {200: {
    "description": "The answer; with `\"stream\": true`, server-sent events of chunks ending "
                   "with `data: [DONE]`",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


class EventStreamResponse(StreamingResponse):
    """text/event-stream whose chunk generator is closed however the response ends (finished,
    client gone, server stopping), so its cleanup always runs."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], request_id: str | None = None) -> None:
        super().__init__(events, headers=id_header(request_id) | HEADERS)
        self._events = events

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
