"""The one mapping from gRPC statuses (and the gateway's own request checks) to OpenAI errors.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p",
               "code": null}}

| gRPC status          | HTTP | type                    | code                |
|----------------------|------|-------------------------|---------------------|
| INVALID_ARGUMENT     | 400  | invalid_request_error   | null                |
| UNAUTHENTICATED      | 401  | authentication_error    | invalid_api_key     |
| PERMISSION_DENIED    | 403  | permission_error        | permission_denied   |
| NOT_FOUND            | 404  | invalid_request_error   | model_not_found (*) |
| ALREADY_EXISTS       | 409  | invalid_request_error   | already_exists      |
| FAILED_PRECONDITION  | 409  | invalid_request_error   | failed_precondition |
| RESOURCE_EXHAUSTED   | 429  | rate_limit_error        | rate_limit_exceeded |
| CANCELLED            | 503  | service_unavailable     | cancelled           |
| UNAVAILABLE          | 503  | service_unavailable     | unavailable         |
| DEADLINE_EXCEEDED    | 504  | timeout                 | timeout             |
| anything else        | 500  | server_error            | internal_error      |

(*) job_not_found on the training job routes.
A 429 carries `Retry-After` (whole seconds, rounded up) from the status's google.rpc.RetryInfo.
`param` is the first bad field, named as in the OpenAI request (`sampling.top_p` -> `top_p`).
A stream that fails after its first chunk ends with one `data: {"error": ...}` frame and then
`data: [DONE]` (gateway/sse.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gateway.openai_models import ErrorResponse
from nanollm.client_errors import NanoLLMError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpError:
    status: int
    type: str
    code: str | None


STATUS_MAP: dict[grpc.StatusCode, HttpError] = {
    grpc.StatusCode.INVALID_ARGUMENT: HttpError(400, "invalid_request_error", None),
    grpc.StatusCode.UNAUTHENTICATED: HttpError(401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: HttpError(403, "permission_error", "permission_denied"),
    grpc.StatusCode.NOT_FOUND: HttpError(404, "invalid_request_error", "model_not_found"),
    grpc.StatusCode.ALREADY_EXISTS: HttpError(409, "invalid_request_error", "already_exists"),
    grpc.StatusCode.FAILED_PRECONDITION: HttpError(409, "invalid_request_error",
                                                   "failed_precondition"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: HttpError(429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.CANCELLED: HttpError(503, "service_unavailable", "cancelled"),
    grpc.StatusCode.UNAVAILABLE: HttpError(503, "service_unavailable", "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: HttpError(504, "timeout", "timeout"),
}
INTERNAL = HttpError(500, "server_error", "internal_error")
# The error answers a route documents in the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503, 504)}

# Contract fields that no REST request field stands for.
UNNAMED = ("sampling", "request_id")
Renames = Mapping[str, str]


class GatewayError(Exception):
    """An error the gateway itself finds; rendered like a gRPC error of the same status."""

    def __init__(self, code: grpc.StatusCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def openai_param(field: str, renames: Renames | None = None) -> str | None:
    """The REST name of a contract field path: `sampling.top_p` -> `top_p`, `sampling.stop[1]`
    -> `stop`; `renames` maps what a route calls differently (chat: prompt -> messages)."""
    head = field.split(".")[-1].split("[")[0]
    if head in UNNAMED or not head:
        return None
    if head == "prompt_token_ids":  # OpenAI sends token-id prompts as `prompt`
        head = "prompt"
    return (renames or {}).get(head, head)


def error_body(status: grpc.StatusCode, message: str, param: str | None,
               code: str | None = None) -> tuple[HttpError, dict[str, object]]:
    """The HTTP error for a status, and its OpenAI body (`code` overrides the table's)."""
    kind = STATUS_MAP.get(status, INTERNAL)
    if kind is INTERNAL:
        message = "internal error in the model server"  # the details are in the server's log
    body = {"error": {"message": message, "type": kind.type, "param": param,
                      "code": code or kind.code}}
    return kind, body


def describe(err: NanoLLMError, renames: Renames | None = None) -> tuple[str | None, str]:
    """(param, message) of a failed gRPC call: the first bad field, and every one."""
    violations = err.field_violations
    if not violations:
        return None, err.message or err.code.name
    message = "; ".join(f"{openai_param(v.field, renames) or v.field}: {v.description}"
                        for v in violations)
    return openai_param(violations[0].field, renames), message


def from_grpc(err: NanoLLMError, renames: Renames | None = None,
              not_found: str = "model_not_found") -> tuple[int, dict[str, object],
                                                           dict[str, str]]:
    """(HTTP status, OpenAI error body, headers) for a failed gRPC call; `not_found` is the
    code of a NOT_FOUND (what the route looks up)."""
    param, message = describe(err, renames)
    code = err.code
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in message:
        # gRPC's own size limit on a request, not a busy server: retrying cannot help.
        code, message = grpc.StatusCode.INVALID_ARGUMENT, f"the request is too large ({message})"
    kind, body = error_body(code, message, param,
                            not_found if code == grpc.StatusCode.NOT_FOUND else None)
    headers = {}
    if kind.status == 429:
        delay = err.retry_delay
        headers["Retry-After"] = str(max(1, math.ceil(delay)) if delay is not None else 1)
    if kind is INTERNAL:
        log.error("backend error %s: %s", err.code.name, err.message)
    return kind.status, body, headers


def grpc_error_response(err: NanoLLMError, renames: Renames | None = None,
                        not_found: str = "model_not_found") -> JSONResponse:
    status, body, headers = from_grpc(err, renames, not_found)
    return JSONResponse(body, status_code=status, headers=headers)


def gateway_error_response(err: GatewayError) -> JSONResponse:
    kind, body = error_body(err.code, err.message, err.param)
    return JSONResponse(body, status_code=kind.status)


TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _is_field(part: object) -> bool:
    """Whether a pydantic `loc` part names a field or index (not a union member's type)."""
    if isinstance(part, int):
        return True
    text = str(part)
    return text.isidentifier() and text not in TYPE_TAGS and not text[:1].isupper()


def _validation_message(error: dict[str, object]) -> tuple[str | None, str]:
    """(param, message) of one pydantic error; model-level checks prefix their field."""
    kind = error.get("type")
    if kind == "json_invalid":
        return None, "the request body is not valid JSON"
    loc = list(error.get("loc") or ())[1:]  # type: ignore[call-overload]  # drop "body"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unrecognized request argument"
    if not loc:
        field, _, rest = message.partition(": ")
        if rest and field.isidentifier():
            return field, message
        if kind == "missing":
            return None, "the request body is required"
        return None, "the request body must be a JSON object"
    path: list[str] = []
    for part in loc:
        if not _is_field(part):
            break  # the rest names the member of a union that failed
        path.append(str(part))
    name = ".".join(path) if path else str(loc[0])
    return str(loc[0]), f"{name}: {message}"


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def install_handlers(app: FastAPI) -> None:
    """OpenAI error bodies for every failure, whichever layer finds it."""

    async def on_grpc(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, NanoLLMError)
        return grpc_error_response(exc)

    async def on_gateway(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        return gateway_error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if not errors:
            return gateway_error_response(GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                                                       "invalid request body"))
        found = [_validation_message(e) for e in errors]
        message = "; ".join(dict.fromkeys(m for _, m in found))
        content_type = request.headers.get("content-type", "")
        if found[0][0] is None and not _is_json(content_type):
            # The body was not read as JSON at all (curl -d sends a form's type).
            message = (f"{message}; send it with Content-Type: application/json (got "
                       f"{content_type or 'no Content-Type'})")
        return gateway_error_response(GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message,
                                                   found[0][0]))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = {"error": {"message": str(exc.detail), "type": kind, "param": None,
                          "code": None}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A fault of the gateway itself: an OpenAI error body, the traceback in the log.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        _, body = error_body(grpc.StatusCode.INTERNAL, "", None)
        return JSONResponse(body, status_code=INTERNAL.status)

    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(NanoLLMError, on_grpc)
    app.add_exception_handler(GatewayError, on_gateway)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
