"""POST /v1/completions: OpenAI text completions over GenerateService.

A prompt list makes one gRPC call per prompt (all at once); choice p * n + i is prompt p's
choice i. `echo` puts the prompt before each choice's text (in a stream: as the choice's first
chunk). `logprobs: N` returns the log-probability of each sampled token and its N most likely
alternatives (0 to 5), with `text_offset` counted in the returned text; with `echo` (not
streamed) the prompt's tokens are scored too, and `max_tokens: 0` scores without generating.

A prompt of token ids (`[15496, 995]`, or a list of such lists) is sent as those ids
(`prompt_token_ids`), so the model sees exactly the tokens asked for, even ones no text encodes
to (a special token, part of a UTF-8 character); `echo` shows the text they decode to.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.backend import Backend
from gateway.errors import ERRORS, GatewayError, describe
from gateway.generation import Generation, Stream, TokenTexts, finish_reason, usage_of
from gateway.openai_models import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from gateway.sse import STREAMED, EventStreamResponse, id_header, openai_events
from nanollm.client_errors import NanoLLMError
from nanollm.v1 import generate_pb2

router = APIRouter(tags=["OpenAI"])
# The Detokenize field that a token-id prompt fills.
RENAMES = {"token_ids": "prompt"}


async def prompt_texts(body: CompletionRequest, backend: Backend, request: Request
                       ) -> list[str]:
    """Each prompt as text, for echo: token-id prompts decoded (which also checks their ids)."""
    async def text(prompt: str | list[int]) -> str:
        if isinstance(prompt, str):
            return prompt
        return (await backend.call(request, backend.generate.Detokenize,
                                   generate_pb2.DetokenizeRequest(model=body.model,
                                                                  token_ids=prompt))).text

    try:
        return list(await asyncio.gather(*(text(p) for p in body.prompt_list)))
    except NanoLLMError as err:
        if err.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        raise GatewayError(err.code, describe(err, RENAMES)[1], "prompt") from None


def completion_logprobs(tokens: list[str], logprobs: Sequence[float | None], offset: int,
                        ranked: Sequence[list[tuple[str, float]] | None] | None = None
                        ) -> CompletionLogprobs:
    """OpenAI's legacy logprobs object. `top_logprobs[i]` maps the best alternatives at
    position i to their logprobs and, as OpenAI's does, always holds the sampled token too
    (so up to logprobs + 1 entries); with logprobs 0 it holds the sampled token alone. A
    None logprob (an echoed prompt's first token) has None there too."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    tops: list[dict[str, float] | None] = []
    for i, (token, logprob) in enumerate(zip(tokens, logprobs, strict=True)):
        if logprob is None:
            tops.append(None)
            continue
        top: dict[str, float] = {}
        # Tokens of one text (bytes of a split character): the most likely one stays.
        for text, lp in (ranked[i] or []) if ranked else []:
            top.setdefault(text, lp)
        top.setdefault(token, logprob)
        tops.append(top)
    return CompletionLogprobs(text_offset=offsets, token_logprobs=list(logprobs), tokens=tokens,
                              top_logprobs=tops)


@router.post("/v1/completions", response_model=Completion, responses=ERRORS | STREAMED,
             summary="Create a completion (OpenAI-compatible; `stream` gives server-sent events)")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    backend: Backend = request.app.state.backend
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prompts = await prompt_texts(body, backend, request)
    gen = Generation(backend, request, body.model, body.prompt_list,
                     body.to_sampling_params(), request_id)
    created = int(time.time())
    if body.stream:
        stream = await gen.open_stream()
        return EventStreamResponse(openai_events(_chunks(body, prompts, stream, request_id,
                                                         created, TokenTexts(backend, request))),
                                   request_id)
    replies = await gen.complete()
    texts = TokenTexts(backend, request)
    choices = []
    for p, reply in enumerate(replies):
        for choice in reply.choices:
            text = prompts[p] + choice.text if body.echo else choice.text
            logprobs = None
            if body.wants_logprobs:
                tokens = await texts(reply.model, list(choice.token_ids))
                ranked = await texts.ranked(reply.model, choice.top_logprobs)
                logprobs = completion_logprobs(tokens, list(choice.logprobs), 0, ranked)
                if body.scores_prompt:
                    logprobs = await _with_prompt(reply, texts, tokens, list(choice.logprobs),
                                                  ranked)
            choices.append(CompletionChoice(
                finish_reason=finish_reason(choice.finish_reason),
                index=p * body.choices_per_prompt + choice.index, logprobs=logprobs, text=text))
    result = Completion(id=request_id, choices=choices, created=created,
                        model=replies[0].model, usage=usage_of([r.usage for r in replies]))
    return Response(result.model_dump_json(), media_type="application/json",
                    headers=id_header(request_id))


async def _with_prompt(reply: generate_pb2.GenerateResponse, texts: TokenTexts,
                       tokens: list[str], logprobs: list[float],
                       ranked: list[list[tuple[str, float]]]) -> CompletionLogprobs:
    """echo with logprobs: the prompt's tokens first (the first has no logprob), then the
    generated ones, with offsets counted from the start of the echoed text."""
    prompt = await texts(reply.model, list(reply.prompt_token_ids))
    scores: list[float | None] = [None, *reply.prompt_logprobs, *logprobs]
    if not (ranked or reply.prompt_top_logprobs):  # logprobs 0: no alternatives anywhere
        return completion_logprobs(prompt + tokens, scores, 0)
    prompt_ranked = await texts.ranked(reply.model, reply.prompt_top_logprobs)
    return completion_logprobs(prompt + tokens, scores, 0, [None, *prompt_ranked, *ranked])


async def _chunks(body: CompletionRequest, prompts: list[str], stream: Stream, request_id: str,
                  created: int, texts: TokenTexts) -> AsyncIterator[str]:
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
            for index in range(len(prompts) * body.choices_per_prompt):
                yield chunk(index, prompts[index // body.choices_per_prompt])
        async for piece in stream:
            message = piece.message
            reason = finish_reason(message.finish_reason)
            logprobs = None
            if body.wants_logprobs and message.token_ids:
                tokens = await texts(message.model, list(message.token_ids))
                ranked = await texts.ranked(message.model, message.top_logprobs)
                offset = offsets.get(piece.choice, 0)
                logprobs = completion_logprobs(tokens, list(message.logprobs), offset, ranked)
                offsets[piece.choice] = offset + sum(len(t) for t in tokens)
            if message.text or reason is not None or logprobs is not None:
                yield chunk(piece.choice, message.text, reason, logprobs)
        if body.include_usage:
            yield Completion(id=request_id, choices=[], created=created, model=stream.model,
                             usage=stream.usage).model_dump_json()
