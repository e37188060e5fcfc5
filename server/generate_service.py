"""GenerateService: protobuf in, the engine's events out. No torch here.

Each RPC looks its model up (NOT_FOUND / UNAVAILABLE), validates the request against it
(INVALID_ARGUMENT with every bad field), submits it to the model's engine and converts events to
messages. Leaving an RPC for any reason (finished, client gone, deadline) cancels the engine
request, so an abandoned request frees its batch slot within two decode steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from nanollm.config import GenerationConfig
from nanollm.sampling import row_seed
from nanollm.sequence import Completion
from nanollm.v1 import generate_pb2, generate_pb2_grpc
from server.errors import CancelledError
from server.events import DoneEvent, Timings, TokenEvent
from server.handle import RequestHandle
from server.interceptors import note
from server.registry import ModelEntry, ModelRegistry
from server.validation import (
    GenerationRequest,
    ModelLimits,
    SamplingRequest,
    validate_generate,
    validate_token_ids,
)

FINISH_REASONS = {
    "stop": generate_pb2.FINISH_REASON_STOP,
    "length": generate_pb2.FINISH_REASON_LENGTH,
    "cancelled": generate_pb2.FINISH_REASON_CANCELLED,
}


def timings_pb(t: Timings) -> generate_pb2.Timings:
    return generate_pb2.Timings(queue_ms=t.queue_ms, prefill_ms=t.prefill_ms,
                                decode_ms=t.decode_ms, total_ms=t.total_ms)


def usage_pb(prompt_tokens: int, completion_tokens: int) -> generate_pb2.Usage:
    return generate_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              total_tokens=prompt_tokens + completion_tokens)


def top_logprobs_pb(top: list[tuple[int, float]]) -> generate_pb2.TopLogprobs:
    return generate_pb2.TopLogprobs(token_ids=[t for t, _ in top], logprobs=[lp for _, lp in top])


def choice_pb(index: int, completion: Completion) -> generate_pb2.Choice:
    return generate_pb2.Choice(index=index, text=completion.text, token_ids=completion.token_ids,
                               logprobs=completion.logprobs or [],
                               finish_reason=FINISH_REASONS[completion.finish_reason],
                               seed=completion.seed,
                               top_logprobs=[top_logprobs_pb(top) for top in
                                             completion.top_logprobs or []])


class GenerateService(generate_pb2_grpc.GenerateServiceServicer):
    def __init__(self, registry: ModelRegistry, defaults: GenerationConfig,
                 max_tokens_limit: int) -> None:
        self.registry = registry
        self.defaults = defaults
        self.max_tokens_limit = max_tokens_limit

    async def Generate(self, request: generate_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> generate_pb2.GenerateResponse:
        req, handle = self._submit(request, context)
        choices: dict[int, Completion] = {}
        done: DoneEvent | None = None
        try:
            async for events in handle:
                for event in events:
                    if isinstance(event, DoneEvent):
                        done = event
                    elif event.completion is not None:
                        choices[event.index] = event.completion
        finally:
            handle.cancel()  # a no-op once finished; frees the slots of an abandoned request
        assert done is not None  # the handle's iteration ends with its DoneEvent
        completion_tokens = sum(c.completion_tokens for c in choices.values())
        self._note_done(req, completion_tokens, done)
        if done.error is not None:
            raise done.error
        response = generate_pb2.GenerateResponse(
            request_id=req.request_id, model=req.model,
            choices=[choice_pb(i, choices[i]) for i in sorted(choices)],
            usage=usage_pb(len(req.prompt_ids), completion_tokens),
            timings=timings_pb(done.timings))
        if req.score_prompt:  # choice 0 scored the prompt
            scored = choices[0]
            response.prompt_token_ids.extend(req.prompt_ids)
            response.prompt_logprobs.extend(scored.prompt_logprobs or [])
            response.prompt_top_logprobs.extend(
                top_logprobs_pb(top) for top in scored.prompt_top_logprobs or [])
        return response

    async def StreamGenerate(self, request: generate_pb2.StreamGenerateRequest,
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[generate_pb2.StreamGenerateResponse]:
        req, handle = self._submit(request, context)
        prompt_tokens, completion_tokens = len(req.prompt_ids), 0
        try:
            async for events in handle:
                messages = []
                for event in events:
                    if isinstance(event, DoneEvent):
                        self._note_done(req, completion_tokens, event)
                        # The server cancelling (unload, shutdown) ends the stream normally: its
                        # choices say FINISH_REASON_CANCELLED. Other errors end it with a status.
                        if event.error is not None and not isinstance(event.error,
                                                                      CancelledError):
                            raise event.error
                        if messages:
                            messages[-1].timings.CopyFrom(timings_pb(event.timings))
                        continue
                    completion_tokens += event.token is not None
                    messages.append(self._piece(req, event, prompt_tokens, completion_tokens))
                for message in messages:
                    yield message
        finally:
            handle.cancel()

    async def Tokenize(self, request: generate_pb2.TokenizeRequest,
                       context: grpc.aio.ServicerContext) -> generate_pb2.TokenizeResponse:
        entry = self.registry.serving(request.model)
        tokenizer = _limits(entry).tokenizer
        ids = tokenizer.encode(request.text)
        note(model=entry.name, tokens=len(ids))
        return generate_pb2.TokenizeResponse(model=entry.name, token_ids=ids, count=len(ids),
                                             tokens=[tokenizer.decode([i]) for i in ids])

    async def Detokenize(self, request: generate_pb2.DetokenizeRequest,
                         context: grpc.aio.ServicerContext) -> generate_pb2.DetokenizeResponse:
        entry = self.registry.serving(request.model)
        tokenizer = _limits(entry).tokenizer
        ids = validate_token_ids(request.token_ids, tokenizer)
        note(model=entry.name, tokens=len(ids))
        return generate_pb2.DetokenizeResponse(model=entry.name, text=tokenizer.decode(ids))

    # ------------------------------------------------------------------------------------------

    def _submit(self, request: SamplingRequest, context: grpc.aio.ServicerContext
                ) -> tuple[GenerationRequest, RequestHandle]:
        entry = self.registry.serving(request.model)
        note(model=entry.name)
        req = validate_generate(request, _limits(entry), self.defaults, self.max_tokens_limit)
        note(request_id=req.request_id, prompt_tokens=len(req.prompt_ids), n=req.n)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        assert entry.engine is not None  # READY entries have one
        handle = entry.engine.submit(req, asyncio.get_running_loop(), deadline)
        return req, handle

    @staticmethod
    def _piece(req: GenerationRequest, event: TokenEvent, prompt_tokens: int,
               completion_tokens: int) -> generate_pb2.StreamGenerateResponse:
        message = generate_pb2.StreamGenerateResponse(
            request_id=req.request_id, model=req.model, index=event.index, text=event.text,
            usage=usage_pb(prompt_tokens, completion_tokens))
        if event.token is not None:
            message.token_ids.append(event.token)
            if event.logprob is not None:
                message.logprobs.append(event.logprob)
            if event.top is not None:
                message.top_logprobs.append(top_logprobs_pb(event.top))
        if event.finish_reason is not None:
            message.finish_reason = FINISH_REASONS[event.finish_reason]
            message.seed = row_seed(req.seed, event.index)
        return message

    @staticmethod
    def _note_done(req: GenerationRequest, completion_tokens: int, done: DoneEvent) -> None:
        t = done.timings
        note(completion_tokens=completion_tokens, queue_ms=t.queue_ms, prefill_ms=t.prefill_ms,
             decode_ms=t.decode_ms, total_ms=t.total_ms)


def _limits(entry: ModelEntry) -> ModelLimits:
    assert entry.limits is not None  # set on every READY entry
    return entry.limits
