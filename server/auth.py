"""API keys: `authorization: Bearer <key>` metadata on every nanollm.v1 RPC.

    keys = KeyRing.load(api_keys=["k1"], api_key_file=None, admin_keys=["a1"], admin_key_file=None)
    server = grpc.aio.server(interceptors=[ErrorInterceptor(metrics), AuthInterceptor(keys)])

Rules, when any key is configured:
- GenerateService (and any other nanollm service) needs a user key or the admin key;
- reading the model list (ListModels, GetModel) needs a user key or the admin key, like
  GenerateService: clients must be able to see what they can call (the OpenAI SDK's
  `models.list()` goes there);
- the rest of ModelAdminService (and TrainService) needs the admin key: a valid user key gets
  PERMISSION_DENIED, no key or an unknown one UNAUTHENTICATED. With user keys but no admin key,
  nobody may call the admin RPCs;
- with admin keys only, GenerateService stays open and only the admin RPCs need a key;
- health checks and reflection never need a key (load balancers and grpcurl use them).
With no key configured at all every RPC is open: the server then listens on loopback by default.
Keys are compared in constant time. Key files hold one key per line; blank lines and lines
starting with '#' are skipped.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from nanollm.config import ConfigError
from server.errors import PermissionDeniedError, ServerError, UnauthenticatedError

PROTECTED_PREFIX = "/nanollm."
ADMIN_PREFIXES = ("/nanollm.v1.ModelAdminService/", "/nanollm.v1.TrainService/")
USER_READABLE = frozenset({"/nanollm.v1.ModelAdminService/ListModels",
                           "/nanollm.v1.ModelAdminService/GetModel"})


def read_key_file(path: str) -> list[str]:
    """Keys from a file, one per line; ConfigError names the file when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"key file {path} cannot be read: {exc}") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ConfigError(f"key file {path} holds no key")
    return keys


@dataclass(frozen=True)
class KeyRing:
    user_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()

    @classmethod
    def load(cls, api_keys: Sequence[str], api_key_file: str | None, admin_keys: Sequence[str],
             admin_key_file: str | None) -> KeyRing:
        users = list(api_keys) + (read_key_file(api_key_file) if api_key_file else [])
        admins = list(admin_keys) + (read_key_file(admin_key_file) if admin_key_file else [])
        for key in users + admins:
            if not key or not key.isprintable() or " " in key:
                raise ConfigError("API keys must be non-empty printable text without spaces")
        return cls(tuple(users), tuple(admins))

    @property
    def enabled(self) -> bool:
        return bool(self.user_keys or self.admin_keys)

    def role(self, key: str) -> str | None:
        """'admin', 'user' or None; every key is compared, in constant time."""
        is_admin = _matches(key, self.admin_keys)
        is_user = _matches(key, self.user_keys)
        return "admin" if is_admin else "user" if is_user else None

    def check(self, method: str, key: str | None) -> ServerError | None:
        """The error for calling `method` with `key` (None: no key sent), or None if allowed."""
        if not self.enabled or not method.startswith(PROTECTED_PREFIX):
            return None
        admin_only = method.startswith(ADMIN_PREFIXES) and method not in USER_READABLE
        if not admin_only and not self.user_keys:
            return None  # only the admin RPCs are locked
        if key is None:
            return UnauthenticatedError("this server needs an API key: send `authorization: "
                                        "Bearer <key>` (gRPC metadata or HTTP header)")
        if not key:  # what bearer_key makes of another scheme or an empty key
            return UnauthenticatedError("the authorization metadata must be `Bearer <key>`; "
                                        "send the key after the word Bearer")
        role = self.role(key)
        if role is None:
            return UnauthenticatedError("unknown API key")
        if admin_only and role != "admin":
            return PermissionDeniedError("this RPC needs the admin key; the key sent is a user "
                                         "key")
        return None


def _matches(key: str, keys: Iterable[str]) -> bool:
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def bearer_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The key of an `authorization: Bearer <key>` entry; "" for a malformed one."""
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, key = text.strip().partition(" ")
            return key.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Replaces the handler of a refused call by one that raises the refusal (which the
    ErrorInterceptor, outside this one, turns into the status)."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        key = bearer_key(handler_call_details.invocation_metadata)
        error = self.keys.check(handler_call_details.method, key)
        if error is None:
            return handler
        if handler.unary_stream is not None:
            async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                raise error
                yield  # an async generator, like the handler it stands in for

            return handler._replace(unary_stream=refuse_stream)

        async def refuse(request: Any, context: Any) -> Any:
            raise error

        return handler._replace(unary_unary=refuse)
