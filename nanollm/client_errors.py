"""Errors raised by nanollm.client: one exception class per gRPC status, with decoded details.

A server status carries `google.rpc` detail messages in the `grpc-status-details-bin` trailer;
they are decoded here, so callers read `err.field_violations` or `err.retry_delay` instead of
parsing protobuf:

    try:
        client.generate("", max_tokens=0)
    except InvalidArgumentError as err:
        err.field_violations  # [FieldViolation("prompt", "must not be empty"), ...]
    except ResourceExhaustedError as err:
        time.sleep(err.retry_delay or 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc
from google.protobuf import any_pb2, descriptor_pool, message, message_factory
from google.rpc import error_details_pb2, status_pb2

# The trailer grpc-status (grpc_status.rpc_status) puts the google.rpc.Status in.
DETAILS_TRAILER = "grpc-status-details-bin"

__all__ = [
    "AlreadyExistsError",
    "CancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NanoLLMError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
]


class FieldViolation(NamedTuple):
    """One bad request field: its path (such as `sampling.top_p`) and what is wrong with it."""

    field: str
    description: str


class NanoLLMError(Exception):
    """A failed call: the gRPC status code, the server's message and its google.rpc details."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 details: list[message.Message] | None = None) -> None:
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(self._describe())

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every google.rpc.BadRequest field violation the status carried (empty if none)."""
        return [FieldViolation(v.field, v.description)
                for d in self.details if isinstance(d, error_details_pb2.BadRequest)
                for v in d.field_violations]

    @property
    def retry_delay(self) -> float | None:
        """Seconds the server asks to wait before retrying (google.rpc.RetryInfo), or None."""
        for d in self.details:
            if isinstance(d, error_details_pb2.RetryInfo) and d.HasField("retry_delay"):
                return d.retry_delay.seconds + d.retry_delay.nanos / 1e9
        return None

    def _describe(self) -> str:
        text = f"{self.code.name}: {self.message}"
        # Servers often spell the violations out in the message already; add the others.
        violations = [v for v in self.field_violations if v.description not in self.message]
        if violations:
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in violations) + ")"
        return text


class CancelledError(NanoLLMError):
    """CANCELLED: the call was cancelled (by this client, or its model was unloaded)."""


class InvalidArgumentError(NanoLLMError):
    """INVALID_ARGUMENT: a bad request field; see `field_violations`."""


class DeadlineExceededError(NanoLLMError):
    """DEADLINE_EXCEEDED: the call's timeout passed, while queued or while generating."""


class NotFoundError(NanoLLMError):
    """NOT_FOUND: no model of that name (or nothing at a path to load)."""


class AlreadyExistsError(NanoLLMError):
    """ALREADY_EXISTS: a model of that name is already loaded."""


class PermissionDeniedError(NanoLLMError):
    """PERMISSION_DENIED: the key is valid but not allowed this call (admin RPCs)."""


class ResourceExhaustedError(NanoLLMError):
    """RESOURCE_EXHAUSTED: the request queue is full; retry after `retry_delay` seconds."""


class FailedPreconditionError(NanoLLMError):
    """FAILED_PRECONDITION: the model is not in a state that allows the call."""


class InternalError(NanoLLMError):
    """INTERNAL: a server-side failure (never caused by the request's content)."""


class UnavailableError(NanoLLMError):
    """UNAVAILABLE: the server is unreachable, draining, or the model is still loading."""


class UnauthenticatedError(NanoLLMError):
    """UNAUTHENTICATED: no API key, or one the server does not know."""


_BY_CODE: dict[grpc.StatusCode, type[NanoLLMError]] = {
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


def _unpack(detail: any_pb2.Any) -> message.Message:
    """A google.rpc detail as its own message type; an unknown type stays an Any."""
    name = detail.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return detail
    msg = message_factory.GetMessageClass(descriptor)()
    detail.Unpack(msg)
    return msg


def decode_details(trailing_metadata: Iterable[tuple[str, Any]] | None) -> list[message.Message]:
    """The google.rpc detail messages of a status, from the call's trailing metadata."""
    for key, value in trailing_metadata or ():
        if key == DETAILS_TRAILER:
            status = status_pb2.Status.FromString(value)
            return [_unpack(d) for d in status.details]
    return []


def from_rpc_error(err: grpc.RpcError) -> NanoLLMError:
    """The NanoLLMError subclass for a failed sync or asyncio gRPC call."""
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    text: str = err.details() or ""  # type: ignore[attr-defined]
    trailers = err.trailing_metadata()  # type: ignore[attr-defined]
    cls = _BY_CODE.get(code, NanoLLMError)
    return cls(code, text, decode_details(trailers))

