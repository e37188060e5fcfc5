"""The server-streaming calls of the typed client: one wrapper for blocking code, one for
asyncio, whatever the message type (StreamGenerate's tokens, WatchJob's events).

Iterating yields the call's messages; a failed call raises its `NanoLLMError`
(nanollm.client_errors); leaving a `with` block, or `cancel()`, cancels the call (for
StreamGenerate that frees the request's batch slot on the server; a WatchJob's job goes on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from nanollm.client_errors import from_rpc_error

Message = TypeVar("Message")


class CallStream(Iterator[Message], Generic[Message]):
    """The messages of one server-streaming call, for `for`."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __next__(self) -> Message:
        try:
            return next(self._call)  # type: ignore[no-any-return]
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> CallStream[Message]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class AsyncCallStream(AsyncIterator[Message], Generic[Message]):
    """The messages of one server-streaming call, for `async for`."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call

    async def __anext__(self) -> Message:
        try:
            msg = await self._call.read()
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        if msg is grpc.aio.EOF:
            raise StopAsyncIteration
        return msg  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> AsyncCallStream[Message]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.cancel()
