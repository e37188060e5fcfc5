"""The engine: one thread per loaded model owns the model, its DecodeBatch (KV cache) and a
bounded queue; requests join the running batch between decode steps.

    engine = Engine("gpt", loaded.model, loaded.tokenizer, EngineSettings(max_batch_size=16),
                    metrics)
    engine.start()
    handle = engine.submit(request, asyncio.get_running_loop(), deadline=None)
    async for events in handle:           # list[TokenEvent | DoneEvent] per decode step
        ...
    handle.cancel()                       # client gone: the slot is free within two steps
    engine.drain(); engine.wait_idle(30); engine.stop()

The thread loop, between two steps: apply cancellations (DecodeBatch.cancel, reported and freed
by the next step), drop requests whose deadline passed (queued or running), admit waiting
requests in arrival order while their n choices fit into free slots, then run one
`DecodeBatch.step()` (the project's one decode loop) and push each request's events to its
asyncio queue (server/handle.py: one `loop.call_soon_threadsafe` per event loop and step). The
asyncio side never runs torch; this thread never touches gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from nanollm.batch import DecodeBatch, StepOutput
from nanollm.model import GPT
from nanollm.sampling import row_seed
from nanollm.sequence import SequenceState
from nanollm.tokenizer import Tokenizer
from server.errors import (
    CancelledError,
    DeadlineExceededError,
    InternalError,
    QueueFullError,
    ServerError,
    UnavailableError,
)
from server.events import DoneEvent, Event, TokenEvent
from server.handle import RequestHandle, post_all, timings
from server.metrics import ServerMetrics
from server.validation import GenerationRequest

log = logging.getLogger(__name__)

# RetryInfo on a full queue: a guess from recent request durations, kept within these bounds.
MIN_RETRY_S, MAX_RETRY_S = 0.1, 30.0


@dataclass(frozen=True)
class EngineSettings:
    max_batch_size: int = 8  # sequences decoded together (slots of the KV cache)
    max_queue: int = 64  # requests waiting for slots before submit() refuses
    prefill_budget: int | None = 512  # prompt tokens computed per step (None: no limit)


class Engine:
    """One model, one DecodeBatch, one thread; see the module docstring."""

    def __init__(self, name: str, model: GPT, tokenizer: Tokenizer, settings: EngineSettings,
                 metrics: ServerMetrics) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.metrics = metrics
        self._batch = DecodeBatch(model, tokenizer, max_batch_size=settings.max_batch_size,
                                  prefill_budget=settings.prefill_budget)
        self._cond = threading.Condition()
        # Guarded by _cond:
        self._waiting: deque[RequestHandle] = deque()
        self._cancels: list[tuple[RequestHandle, ServerError]] = []
        self._inflight: set[RequestHandle] = set()
        self._accepting = True
        self._stopping = False
        # Engine thread only:
        self._slots: dict[int, tuple[RequestHandle, int]] = {}  # slot -> (request, choice)
        self._running: set[RequestHandle] = set()
        self._request_seconds = 1.0  # moving average of admit -> done, for RetryInfo
        self.steps = 0
        self.tokens_generated = 0
        self.completed = 0  # requests that ended on their own (stop, length)
        self.cancelled = 0  # requests that the client, a deadline or the server ended
        self.recent: deque[RequestHandle] = deque(maxlen=64)  # finished requests, newest last
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)

    # ------------------------------------------------------------------------------------------
    # called from other threads

    def start(self) -> None:
        self._thread.start()

    @property
    def num_waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def num_running(self) -> int:
        """Requests admitted into the batch and not finished."""
        with self._cond:
            return len(self._inflight) - len(self._waiting)

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
               deadline: float | None = None) -> RequestHandle:
        """Queue a request; QueueFullError when max_queue are waiting, UnavailableError once
        draining. `deadline` is a time.monotonic() value."""
        with self._cond:
            if not self._accepting:
                raise UnavailableError(f"model {self.name!r} is not accepting requests: it is "
                                       "being unloaded or the server is shutting down",
                                       reason="draining")
            # Free batch slots take requests too: a burst that fits them is never refused,
            # even before the engine thread has admitted the earlier ones.
            if len(self._waiting) >= self.settings.max_queue + self._batch.free_slots:
                waiting = len(self._waiting)
                raise QueueFullError(f"model {self.name!r} has {waiting} "
                                     f"request{'' if waiting == 1 else 's'} waiting (the queue "
                                     "is full); retry later",
                                     retry_after=self._retry_after())
            handle = RequestHandle(request, self, loop, deadline)
            self._waiting.append(handle)
            self._inflight.add(handle)
            self._cond.notify_all()
        return handle

    def cancel(self, handle: RequestHandle,
               error: ServerError | None = None) -> None:
        """End a request early (thread-safe). `error` is what its consumer sees (None: the
        client itself went away)."""
        error = error or CancelledError("the client cancelled the request")
        with self._cond:
            if handle.finished or handle.cancel_step is not None:
                return
            handle.cancel_step, handle.tokens_at_cancel = self.steps, handle.generated
            if handle in self._waiting:
                self._waiting.remove(handle)
                self._finish_unadmitted(handle, error)
            else:
                self._cancels.append((handle, error))
                self._cond.notify_all()

    def drain(self) -> None:
        """Stop accepting requests; queued and running ones go on."""
        with self._cond:
            self._accepting = False

    def cancel_all(self, error: ServerError) -> int:
        """Cancel every queued and running request with `error`; returns how many."""
        with self._cond:
            handles = list(self._inflight)
        for handle in handles:
            self.cancel(handle, error)
        return len(handles)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._inflight, timeout)

    def stop(self) -> None:
        """Cancel what is left, end the thread and let the model's memory go."""
        self.drain()
        self.cancel_all(CancelledError(f"model {self.name!r} was stopped"))
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self.metrics.forget_model(self.name)

    # ------------------------------------------------------------------------------------------
    # the engine thread

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._waiting or self._cancels
                                    or self._batch.num_active)
                if self._stopping and not (self._batch.num_active or self._cancels):
                    break
                cancels, self._cancels = self._cancels, []
                self._expire_waiting()
                admitted = self._pop_admissible()
                waiting = len(self._waiting)
            try:
                for handle, error in cancels:
                    self._cancel_rows(handle, error)
                self._expire_running()
                for handle in admitted:
                    self._admit(handle)
                if self._batch.num_active:
                    self._step()
            except Exception:  # a fault of the engine (e.g. out of device memory), not a client's
                log.exception("model %s: decode step failed; failing its %d running requests",
                              self.name, len(self._running))
                self._fail_running()
            self.metrics.set_waiting(self.name, waiting)
            self.metrics.set_running(self.name, self._batch.num_active)
            self.metrics.set_kv_usage(self.name, self._batch.cached_tokens / self._batch.capacity)

    def _step(self) -> None:
        self.metrics.batch_size(self.name, self._batch.num_active)
        outputs = self._batch.step()
        self.steps += 1
        self._dispatch(outputs)

    def _pop_admissible(self) -> list[RequestHandle]:
        """Waiting requests (in arrival order) whose choices all fit in the free slots.
        Called with _cond held."""
        free = self._batch.free_slots
        admitted = []
        while self._waiting and self._waiting[0].request.n <= free:
            handle = self._waiting.popleft()
            free -= handle.request.n
            admitted.append(handle)
        return admitted

    def _admit(self, handle: RequestHandle) -> None:
        req = handle.request
        handle.admitted_at = time.monotonic()
        self._running.add(handle)
        for i in range(req.n):
            seq = SequenceState(req.prompt_ids, req.config, self.tokenizer,
                                max_tokens=req.max_tokens, seed=row_seed(req.seed, i),
                                score_prompt=req.score_prompt and i == 0)
            self._slots[self._batch.admit(seq)] = (handle, i)
        self.metrics.queue_time(self.name, handle.admitted_at - handle.submitted_at)
        self.metrics.tokens(self.name, len(req.prompt_ids), 0)

    def _cancel_rows(self, handle: RequestHandle, error: ServerError) -> None:
        if handle.finished:
            return
        handle.error = handle.error or error
        for slot, (owner, _) in self._slots.items():
            if owner is handle:
                self._batch.cancel(slot)

    def _expire_waiting(self) -> None:
        """Drop queued requests whose deadline has passed. Called with _cond held."""
        now = time.monotonic()
        for handle in [h for h in self._waiting if h.deadline is not None and now > h.deadline]:
            self._waiting.remove(handle)
            self._finish_unadmitted(handle, self._deadline_error())

    def _expire_running(self) -> None:
        now = time.monotonic()
        for handle in [h for h in self._running if h.deadline is not None and now > h.deadline]:
            if handle.error is None:
                handle.cancel_step, handle.tokens_at_cancel = self.steps, handle.generated
                self._cancel_rows(handle, self._deadline_error())

    def _deadline_error(self) -> DeadlineExceededError:
        return DeadlineExceededError(f"the deadline passed before model {self.name!r} finished "
                                     "the request")

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        """Turn step outputs into per-request event lists and post them."""
        now = time.monotonic()
        per_request: dict[RequestHandle, list[Event]] = {}
        generated = 0
        for out in outputs:
            handle, index = self._slots[out.slot]
            event = TokenEvent(index, out.token, out.logprob, out.text, out.finish_reason,
                               top=out.top)
            if out.token is not None:
                generated += 1
                self._count_token(handle, index, now)
            if out.finish_reason is not None:
                event.completion = out.sequence.completion()
                del self._slots[out.slot]
                handle.open_choices -= 1
            per_request.setdefault(handle, []).append(event)
        self.tokens_generated += generated
        self.metrics.tokens(self.name, 0, generated)
        for handle, events in per_request.items():
            if handle.open_choices == 0:
                self._running.discard(handle)
                handle.release_step = self.steps
                events.append(self._close(handle, now))
        post_all(per_request)

    def _count_token(self, handle: RequestHandle, index: int, now: float) -> None:
        handle.generated += 1
        if handle.first_token_at is None:
            handle.first_token_at = now
            self.metrics.ttft(self.name, now - handle.submitted_at)
        previous = handle._token_times.get(index)
        if previous is not None:
            self.metrics.inter_token(self.name, now - previous)
        handle._token_times[index] = now
        handle.last_token_at = now

    def _close(self, handle: RequestHandle, now: float) -> DoneEvent:
        """Mark a request finished and build its DoneEvent (any thread, _cond not held)."""
        with self._cond:
            handle.finished = True
            self._inflight.discard(handle)
            self.recent.append(handle)
            if handle.error is None:
                self.completed += 1
            else:
                self.cancelled += 1
            self._cond.notify_all()
        if handle.admitted_at is not None:
            self._request_seconds = 0.8 * self._request_seconds + 0.2 * (now - handle.admitted_at)
        return DoneEvent(timings(handle, now), handle.error)

    def _finish_unadmitted(self, handle: RequestHandle, error: ServerError) -> None:
        """A request that never got a slot ends: every choice ends "cancelled". Called with
        _cond held (so it marks the request finished itself)."""
        now = time.monotonic()
        handle.error = error
        handle.finished = True
        self._inflight.discard(handle)
        self.recent.append(handle)
        self._cond.notify_all()
        self.cancelled += 1
        events: list[Event] = [TokenEvent(i, None, None, "", "cancelled")
                               for i in range(handle.request.n)]
        events.append(DoneEvent(timings(handle, now), error))
        handle.post(events)

    def _fail_running(self) -> None:
        """After a failed step: end every running request and start from an empty batch."""
        error = InternalError("generation failed on the server; its log has the details")
        now = time.monotonic()
        for handle in list(self._running):
            handle.error = error
            events: list[Event] = [TokenEvent(i, None, None, "", "cancelled")
                                   for (h, i) in self._slots.values() if h is handle]
            events.append(self._close(handle, now))
            handle.post(events)
        self._running.clear()
        self._slots.clear()
        self._batch = DecodeBatch(self.model, self.tokenizer,
                                  max_batch_size=self.settings.max_batch_size,
                                  prefill_budget=self.settings.prefill_budget)

    def _retry_after(self) -> float:
        """Seconds until a slot is likely free: the queue ahead, at the recent pace."""
        per_slot = self._request_seconds / self.settings.max_batch_size
        guess = per_slot * (len(self._waiting) + 1)
        return min(MAX_RETRY_S, max(MIN_RETRY_S, guess))
