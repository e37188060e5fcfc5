"""A request inside the engine: its handle (an async iterator of event lists for the asyncio
side, timestamps written by the engine thread) and the one-wake-up-per-step delivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.errors import ServerError
from server.events import DoneEvent, Event, Timings
from server.validation import GenerationRequest

if TYPE_CHECKING:
    from server.engine import Engine


@dataclass(eq=False)
class RequestHandle:
    """A submitted request: an async iterator of event lists, the last ending in a DoneEvent.

    Fields below `loop` are written by the engine thread only (timestamps: time.monotonic()).
    """

    request: GenerationRequest
    engine: Engine
    loop: asyncio.AbstractEventLoop
    deadline: float | None  # time.monotonic() after which the request is dropped
    submitted_at: float = field(default_factory=time.monotonic)
    admitted_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    open_choices: int = 0
    generated: int = 0  # tokens generated over all choices
    error: ServerError | None = None
    finished: bool = False
    cancel_step: int | None = None  # engine step count when cancel() arrived
    tokens_at_cancel: int | None = None  # `generated` when cancel() arrived
    release_step: int | None = None  # engine step count when its last slot was freed
    _token_times: dict[int, float] = field(default_factory=dict)
    _queue: asyncio.Queue[list[Event]] = field(default_factory=asyncio.Queue)
    _ended: bool = False

    def __post_init__(self) -> None:
        self.open_choices = self.request.n

    def cancel(self) -> None:
        """Stop generating (thread-safe, idempotent): a queued request leaves the queue now, a
        running one frees its slots at the next step."""
        self.engine.cancel(self)

    def __aiter__(self) -> RequestHandle:
        return self

    async def __anext__(self) -> list[Event]:
        if self._ended:
            raise StopAsyncIteration
        events = await self._queue.get()
        self._ended = isinstance(events[-1], DoneEvent)
        return events

    def post(self, events: list[Event]) -> None:
        """Hand events to the request's event loop (from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(self._queue.put_nowait, events)


def post_all(per_request: dict[RequestHandle, list[Event]]) -> None:
    """Hand one step's events to their requests with one wake-up per event loop, not one per
    request: each call_soon_threadsafe wakes the loop through its self-pipe, and on 2 cores the
    Python work of 16 wake-ups per step is taken from the decode step."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, list[Event]]]] = {}
    for handle, events in per_request.items():
        by_loop.setdefault(handle.loop, []).append((handle, events))
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[RequestHandle, list[Event]]]) -> None:
    for handle, events in batch:
        handle._queue.put_nowait(events)


def timings(handle: RequestHandle, now: float) -> Timings:
    """Milliseconds: waiting for a slot, prompt to first token, first to last token, total."""
    admitted = handle.admitted_at if handle.admitted_at is not None else now
    first = handle.first_token_at if handle.first_token_at is not None else now
    last = handle.last_token_at if handle.last_token_at is not None else first
    return Timings(queue_ms=1e3 * (admitted - handle.submitted_at),
                   prefill_ms=1e3 * max(0.0, first - admitted),
                   decode_ms=1e3 * max(0.0, last - first),
                   total_ms=1e3 * (now - handle.submitted_at))
