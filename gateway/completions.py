"""POST /v1/completions: OpenAI text completions over GenerateService.

A prompt list makes one gRPC call per prompt (all at once); choice p * n + i is prompt p's
choice i. `echo` puts the prompt before each choice's text (in a stream: as the choice's first
chunk). `logprobs: 0` returns the log-probability of each sampled token, with `text_offset`
counted in the returned text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.backend import Backend
from gateway.errors import ERRORS
from gateway.generation import Generation, Stream, TokenTexts, finish_reason, usage_of
from gateway.openai_models import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from gateway.sse import EventStreamResponse, openai_events

router = APIRouter(tags=["OpenAI"])

def completion_logprobs(tokens: list[str], logprobs: list[float], offset: int
                        ) -> CompletionLogprobs:
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(text_offset=offsets, token_logprobs=list(logprobs), tokens=tokens,
                              top_logprobs=[{t: lp} for t, lp in zip(tokens, logprobs,
                                                                     strict=True)])


@router.post("/v1/completions", response_model=Completion, responses=ERRORS,
             summary="Create a completion (OpenAI-compatible; `stream` gives server-sent events)")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    backend: Backend = request.app.state.backend
    request_id = f"cmpl-{uuid.uuid4().hex}"
    gen = Generation(backend, request, body.model, body.prompts, body.to_sampling_params(),
                     request_id)
    created = int(time.time())
    if body.stream:
        stream = await gen.open_stream()
        return EventStreamResponse(openai_events(_chunks(body, stream, request_id, created,
                                                         TokenTexts(backend, request))))
    replies = await gen.complete()
    texts = TokenTexts(backend, request)
    choices = []
    for p, reply in enumerate(replies):
        for choice in reply.choices:
            text = body.prompts[p] + choice.text if body.echo else choice.text
            logprobs = None
            if body.wants_logprobs:
                tokens = await texts(reply.model, list(choice.token_ids))
                logprobs = completion_logprobs(tokens, list(choice.logprobs), 0)
            choices.append(CompletionChoice(
                finish_reason=finish_reason(choice.finish_reason),
                index=p * body.choices_per_prompt + choice.index, logprobs=logprobs, text=text))
    result = Completion(id=request_id, choices=choices, created=created,
                        model=replies[0].model, usage=usage_of([r.usage for r in replies]))
    return Response(result.model_dump_json(), media_type="application/json")


async def _chunks(body: CompletionRequest, stream: Stream, request_id: str, created: int,
                  texts: TokenTexts) -> AsyncIterator[str]:
    """The JSON of each stream chunk; a usage chunk last when stream_options asks for it."""
    usage_field = {"usage"} if not body.include_usage else set()

    def chunk(index: int, text: str, reason: str | None = None,
              logprobs: CompletionLogprobs | None = None) -> str:
        choice = CompletionChoice(finish_reason=reason, index=index, logprobs=logprobs, text=text)
        return Completion(id=request_id, choices=[choice], created=created,
                          model=stream.model).model_dump_json(exclude=usage_field)

    async with stream:
        offsets: dict[int, int] = {}
        if body.echo:
            for index in range(len(body.prompts) * body.choices_per_prompt):
                yield chunk(index, body.prompts[index // body.choices_per_prompt])
        async for piece in stream:
            message = piece.message
            reason = finish_reason(message.finish_reason)
            logprobs = None
            if body.wants_logprobs and message.token_ids:
                tokens = await texts(message.model, list(message.token_ids))
                offset = offsets.get(piece.choice, 0)
                logprobs = completion_logprobs(tokens, list(message.logprobs), offset)
                offsets[piece.choice] = offset + sum(len(t) for t in tokens)
            if message.text or reason is not None or logprobs is not None:
                yield chunk(piece.choice, message.text, reason, logprobs)
        if body.include_usage:
            yield Completion(id=request_id, choices=[], created=created, model=stream.model,
                             usage=stream.usage).model_dump_json()
