"""The gRPC calls behind one OpenAI completions or chat request: one call per prompt, each
with n choices. OpenAI numbers choices across prompts: prompt p's choice i is p * n + i.

    gen = Generation(backend, request, model, prompts, params, request_id)
    replies = await gen.complete()                   # GenerateResponse per prompt
    async with await gen.open_stream() as stream:    # raises NanoLLMError before any chunk
        async for piece in stream: ...               # Piece(choice, message), in arrival order
        stream.usage                                 # prompt and completion tokens so far

A stream is opened by reading the first message of every call, so a request the server refuses
(bad field, unknown model, full queue) fails with its HTTP status instead of a 200 stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from fastapi import Request

from gateway.backend import Backend
from gateway.openai_models import Usage
from nanollm.client_errors import NanoLLMError, from_rpc_error
from nanollm.v1 import generate_pb2

FINISH_REASONS: dict[int, str | None] = {
    generate_pb2.FINISH_REASON_UNSPECIFIED: None,
    generate_pb2.FINISH_REASON_STOP: "stop",
    generate_pb2.FINISH_REASON_LENGTH: "length",
    # The server stopped the choice (model unloaded, shutdown): OpenAI has no word for it.
    generate_pb2.FINISH_REASON_CANCELLED: "cancelled",
}


def finish_reason(value: int) -> str | None:
    return FINISH_REASONS.get(value)


def usage_of(usages: list[generate_pb2.Usage]) -> Usage:
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


@dataclass
class Piece:
    """One stream message, placed among the request's choices."""

    choice: int
    message: generate_pb2.StreamGenerateResponse


def _prompt_fields(prompt: str | list[int]) -> dict[str, Any]:
    """The request fields of a prompt: text, or token ids."""
    return {"prompt": prompt} if isinstance(prompt, str) else {"prompt_token_ids": prompt}


class Generation:
    def __init__(self, backend: Backend, request: Request, model: str,
                 prompts: Sequence[str | list[int]], params: generate_pb2.SamplingParams,
                 request_id: str) -> None:
        """prompts: texts, or token ids (sent as prompt_token_ids)."""
        self.backend = backend
        self.request = request
        self.n = params.n if params.HasField("n") else 1
        # One gRPC request id per prompt, so server logs match the OpenAI id.
        ids = [request_id] if len(prompts) == 1 else [f"{request_id}-{i}"
                                                      for i in range(len(prompts))]
        self.prompts = prompts
        self._requests = [(model, _prompt_fields(prompt), params, rid)
                          for prompt, rid in zip(prompts, ids, strict=True)]

    async def complete(self) -> list[generate_pb2.GenerateResponse]:
        calls = [self.backend.generate.Generate(
            generate_pb2.GenerateRequest(model=m, sampling=s, request_id=r, **p),
            **self.backend.call_options(self.request)) for m, p, s, r in self._requests]

        def cancel_all() -> None:
            for call in calls:
                call.cancel()

        async def gather() -> list[generate_pb2.GenerateResponse]:
            try:
                return list(await asyncio.gather(*calls))
            except grpc.RpcError as err:
                cancel_all()  # one prompt failed: the others' answers are not wanted
                raise from_rpc_error(err) from None

        return await self.backend.until_disconnect(self.request, gather(), cancel_all)

    async def open_stream(self) -> Stream:
        calls = [self.backend.stream(self.request, generate_pb2.StreamGenerateRequest(
            model=m, sampling=s, request_id=r, **p)) for m, p, s, r in self._requests]
        stream = Stream(calls, self.n)
        try:
            await self.backend.until_disconnect(self.request, stream.prime(), stream.cancel)
        except BaseException:
            stream.cancel()
            raise
        return stream


_END = object()


class Stream:
    """The merged messages of a request's StreamGenerate calls. Leaving `async with` (or
    cancel()) cancels every call, which frees their batch slots on the server."""

    def __init__(self, calls: list[grpc.aio.UnaryStreamCall], n: int) -> None:
        self._calls = calls
        self._n = n
        self._first: list[generate_pb2.StreamGenerateResponse | None] = [None] * len(calls)
        self._usage = [generate_pb2.Usage() for _ in calls]
        self._readers: list[asyncio.Task[None]] = []
        self.model = ""

    async def prime(self) -> None:
        """Read each call's first message: a refused request fails here, with its status."""
        firsts = await asyncio.gather(*(self._read(call) for call in self._calls))
        self._first = list(firsts)
        self.model = next((m.model for m in firsts if m is not None), "")

    @property
    def usage(self) -> Usage:
        return usage_of(self._usage)

    @staticmethod
    async def _read(call: grpc.aio.UnaryStreamCall) -> generate_pb2.StreamGenerateResponse | None:
        try:
            message = await call.read()
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return None if message is grpc.aio.EOF else message

    def _piece(self, prompt: int, message: generate_pb2.StreamGenerateResponse) -> Piece:
        self._usage[prompt] = message.usage
        return Piece(prompt * self._n + message.index, message)

    async def __aiter__(self) -> AsyncIterator[Piece]:
        if len(self._calls) == 1:  # the common case, without a queue in between
            message = self._first[0]
            while message is not None:
                yield self._piece(0, message)
                message = await self._read(self._calls[0])
            return
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def pump(prompt: int) -> None:
            message = self._first[prompt]
            try:
                while message is not None:
                    queue.put_nowait((prompt, message))
                    message = await self._read(self._calls[prompt])
                queue.put_nowait((prompt, _END))
            except NanoLLMError as err:
                queue.put_nowait((prompt, err))

        self._readers = [asyncio.ensure_future(pump(p)) for p in range(len(self._calls))]
        open_calls = len(self._calls)
        while open_calls:
            prompt, item = await queue.get()
            if item is _END:
                open_calls -= 1
            elif isinstance(item, NanoLLMError):
                raise item
            else:
                yield self._piece(prompt, item)

    def cancel(self) -> None:
        for reader in self._readers:
            reader.cancel()
        for call in self._calls:
            call.cancel()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cancel()


class TokenTexts:
    """The text of single tokens (for log-probabilities), asked of the server's tokenizer once
    per distinct id and request."""

    def __init__(self, backend: Backend, request: Request) -> None:
        self.backend = backend
        self.request = request
        self._cache: dict[int, str] = {}

    async def __call__(self, model: str, ids: list[int]) -> list[str]:
        missing = list(dict.fromkeys(i for i in ids if i not in self._cache))
        replies = await asyncio.gather(*(self.backend.call(
            self.request, self.backend.generate.Detokenize,
            generate_pb2.DetokenizeRequest(model=model, token_ids=[i])) for i in missing))
        self._cache.update((i, r.text) for i, r in zip(missing, replies, strict=True))
        return [self._cache[i] for i in ids]

    async def ranked(self, model: str, tops: Sequence[generate_pb2.TopLogprobs]
                     ) -> list[list[tuple[str, float]]]:
        """Each position's alternatives as (token text, logprob), best first."""
        texts = await self(model, [i for top in tops for i in top.token_ids])
        out, start = [], 0
        for top in tops:
            out.append(list(zip(texts[start:start + len(top.token_ids)], top.logprobs,
                                strict=True)))
            start += len(top.token_ids)
        return out
