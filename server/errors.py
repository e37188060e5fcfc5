"""One exception type per gRPC status, and the one place that turns them into statuses.

    raise InvalidArgumentError([("sampling.top_p", "must be in (0, 1], got 1.5")])
    raise QueueFullError("model 'gpt' has 64 requests waiting", retry_after=0.5)

`to_status(exc)` builds a rich status (google.rpc.Status with BadRequest / RetryInfo details,
sent in the `grpc-status-details-bin` trailer, readable with grpc_status.rpc_status);
`ErrorInterceptor` (server/interceptors.py) applies it to every nanollm.v1 RPC. Anything that is
not a ServerError becomes INTERNAL with a generic message, and is logged with its traceback: a
client never sees a stack trace, and nothing a client sent is ever reported as INTERNAL.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

FieldViolation = tuple[str, str]  # (field path such as "sampling.top_p", what is wrong)


class ServerError(Exception):
    """An error with a gRPC status code; `reason` labels rejections in metrics (or None)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        """google.rpc detail messages to attach, packed."""
        return []


class InvalidArgumentError(ServerError):
    """Bad request fields: every violation is listed in a google.rpc.BadRequest."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_argument"

    def __init__(self, field_violations: Sequence[FieldViolation],
                 message: str | None = None) -> None:
        if not field_violations:
            raise ValueError("InvalidArgumentError needs at least one field violation")
        self.field_violations = list(field_violations)
        text = "; ".join(f"{field}: {why}" for field, why in self.field_violations)
        super().__init__(message or f"invalid request: {text}")

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in self.field_violations
        ])
        return [_pack(bad)]


class NotFoundError(ServerError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class AlreadyExistsError(ServerError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "already_exists"


class QueueFullError(ServerError):
    """The bounded request queue is full; RetryInfo says when a retry may find room."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after * 1e9))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class ResourceExhaustedError(ServerError):
    """Not enough memory (or another resource) for what was asked."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "out_of_memory"


class UnavailableError(ServerError):
    """The model is loading or the server is draining: retry later or elsewhere."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason  # "loading" | "draining" | "unavailable"


class DeadlineExceededError(ServerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(ServerError):
    """The server stopped the request (its model was unloaded, or shutdown's grace ran out)."""

    code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(ServerError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class PermissionDeniedError(ServerError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class FailedPreconditionError(ServerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class InternalError(ServerError):
    """A fault of the server; the message shown to the client is generic."""

    code = grpc.StatusCode.INTERNAL


INTERNAL_MESSAGE = "internal server error; the server log has the details"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(exc: ServerError) -> grpc.Status:
    """The rich gRPC status for a ServerError (code, message, google.rpc details)."""
    rich = status_pb2.Status(code=getattr(code_pb2, exc.code.name), message=exc.message,
                             details=exc.details())
    return rpc_status.to_status(rich)
