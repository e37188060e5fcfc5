"""POST /v1/chat/completions: OpenAI chat over GenerateService, through a plain-text template.

nanoLLM's models are base language models without special chat tokens, so a conversation is
written out as a transcript and the model continues it as the assistant:

    System: You are a helpful assistant.

    User: Hello!

    Assistant: Hi. How can I help?

    User: Write a haiku about programming.

    Assistant:

Each message is `<Role>: <text>`, messages are separated by a blank line, `developer` messages
are written as `System`, and the prompt ends with `Assistant:`. The reply stops where the model
starts the user's next turn (the stop string "\\nUser:", added to the client's own; so a chat
request takes at most 3 stop strings of its own). Leading whitespace of the reply is dropped (the
model writes the space after "Assistant:" itself).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.backend import Backend
from gateway.errors import ERRORS, GatewayError, grpc_error_response
from gateway.generation import Generation, Stream, TokenTexts, finish_reason, usage_of
from gateway.openai_models import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    Delta,
    TokenLogprob,
    TopLogprob,
)
from gateway.sse import STREAMED, EventStreamResponse, id_header, openai_events
from nanollm.client_errors import NanoLLMError

router = APIRouter(tags=["OpenAI"])

ROLE_LABELS = {"system": "System", "developer": "System", "user": "User",
               "assistant": "Assistant"}
END_OF_TURN = "\nUser:"
# The server's errors name the contract's `prompt`; here it is the messages.
RENAMES = {"prompt": "messages"}


def render_chat(messages: Sequence[ChatMessage]) -> str:
    """The prompt of a conversation (see the module docstring)."""
    turns = [f"{ROLE_LABELS[m.role]}: {m.text}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def token_logprobs(tokens: list[str], logprobs: Sequence[float],
                   ranked: list[list[tuple[str, float]]]) -> ChoiceLogprobs:
    """Chat logprobs: each token with its alternatives (top_logprobs of them, best first)."""
    def alternatives(i: int) -> list[TopLogprob]:
        if not ranked:
            return []
        return [TopLogprob(token=t, bytes=list(t.encode("utf-8")), logprob=lp)
                for t, lp in ranked[i]]

    return ChoiceLogprobs(content=[
        TokenLogprob(token=t, bytes=list(t.encode("utf-8")), logprob=lp,
                     top_logprobs=alternatives(i))
        for i, (t, lp) in enumerate(zip(tokens, logprobs, strict=True))])


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses=ERRORS | STREAMED,
             summary="Create a chat completion (OpenAI-compatible; `stream` gives server-sent "
                     "events)")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    if len(body.stop_list) >= 4:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                           "stop: at most 3 stop sequences in a chat request (the chat template "
                           "adds its own end of turn)", "stop")
    backend: Backend = request.app.state.backend
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    gen = Generation(backend, request, body.model, [render_chat(body.messages)],
                     body.to_sampling_params([END_OF_TURN]), request_id)
    created = int(time.time())
    texts = TokenTexts(backend, request)
    try:
        if body.stream:
            stream = await gen.open_stream()
            return EventStreamResponse(openai_events(
                _chunks(body, stream, request_id, created, texts), RENAMES), request_id)
        (reply,) = await gen.complete()
    except NanoLLMError as err:
        return grpc_error_response(err, RENAMES)
    choices = []
    for choice in reply.choices:
        logprobs = None
        if body.logprobs:
            tokens = await texts(reply.model, list(choice.token_ids))
            ranked = await texts.ranked(reply.model, choice.top_logprobs)
            logprobs = token_logprobs(tokens, choice.logprobs, ranked)
        choices.append(ChatChoice(finish_reason=finish_reason(choice.finish_reason) or "stop",
                                  index=choice.index, logprobs=logprobs,
                                  message=AssistantMessage(content=choice.text.lstrip())))
    result = ChatCompletion(id=request_id, choices=choices, created=created, model=reply.model,
                            usage=usage_of([reply.usage]))
    return Response(result.model_dump_json(), media_type="application/json",
                    headers=id_header(request_id))


async def _chunks(body: ChatCompletionRequest, stream: Stream, request_id: str, created: int,
                  texts: TokenTexts) -> AsyncIterator[str]:
    """The JSON of each chunk: the assistant role first for each choice, then the content
    deltas, the finish reason, and a usage chunk when stream_options asks for it."""
    usage_field = {"usage"} if not body.include_usage else set()

    def chunk(choice: ChatChunkChoice) -> str:
        return ChatCompletionChunk(id=request_id, choices=[choice], created=created,
                                   model=stream.model).model_dump_json(exclude=usage_field)

    async with stream:
        for index in range(body.choices_per_prompt):
            yield chunk(ChatChunkChoice(delta=Delta(role="assistant", content=""), index=index))
        started: set[int] = set()  # choices whose reply has begun (leading space dropped)
        async for piece in stream:
            message = piece.message
            text = message.text
            if piece.choice not in started:
                text = text.lstrip()
                if text:
                    started.add(piece.choice)
            reason = finish_reason(message.finish_reason)
            logprobs = None
            if body.logprobs and message.token_ids:
                tokens = await texts(message.model, list(message.token_ids))
                ranked = await texts.ranked(message.model, message.top_logprobs)
                logprobs = token_logprobs(tokens, message.logprobs, ranked)
            if text or reason is not None or logprobs is not None:
                delta = Delta(content=text) if text else Delta()
                yield chunk(ChatChunkChoice(delta=delta, index=piece.choice,
                                            finish_reason=reason, logprobs=logprobs))
        if body.include_usage:
            yield ChatCompletionChunk(id=request_id, choices=[], created=created,
                                      model=stream.model, usage=stream.usage).model_dump_json()
