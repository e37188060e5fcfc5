"""A typed Python client for a nanoLLM gRPC server (`gpt-server`), sync and asyncio.

    from nanollm.client import Client
    with Client("127.0.0.1:50051", api_key="...") as client:
        reply = client.generate("ROMEO:", max_tokens=40, temperature=0)
        print(reply.choices[0].text)
        for msg in client.stream("ROMEO:", max_tokens=40, seed=1):
            print(msg.text, end="", flush=True)

    async with AsyncClient("127.0.0.1:50051") as client:
        async for msg in client.stream("ROMEO:", max_tokens=40):
            ...

Training jobs: start_job, watch_job, get_job, list_jobs, cancel_job, resume_job, delete_job and
load_job_model (nanollm/client_train.py). Responses are the contract's own messages
(nanollm.v1.generate_pb2 / model_admin_pb2 / train_pb2, typed by their .pyi stubs). Sampling
knobs are keyword arguments (or one `Sampling`); an unset knob takes the server's default. A
failed call raises a `NanoLLMError` subclass (nanollm.client_errors) that carries the gRPC
status code and the decoded `google.rpc` details.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from nanollm.client_errors import (
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NanoLLMError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from nanollm.client_streams import AsyncCallStream, CallStream
from nanollm.client_train import AsyncTrainMethods, AsyncWatchStream, TrainMethods, WatchStream
from nanollm.v1 import (
    generate_pb2,
    generate_pb2_grpc,
    model_admin_pb2,
    model_admin_pb2_grpc,
    train_pb2_grpc,
)

__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncStream",
    "AsyncWatchStream",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NanoLLMError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Sampling",
    "Stream",
    "UnauthenticatedError",
    "UnavailableError",
    "WatchStream",
]

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to sample; None leaves a knob to the server's default (see SamplingParams in
    proto/nanollm/v1/generate.proto for ranges)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    stop: Sequence[str] = ()
    stop_at_eos: bool | None = None
    top_logprobs: int | None = None
    prompt_logprobs: bool | None = None

    def to_pb(self) -> generate_pb2.SamplingParams:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        stop = fields.pop("stop")
        params = generate_pb2.SamplingParams(stop=list(stop))
        for name, value in fields.items():
            if value is not None:
                setattr(params, name, value)
        return params


def _sampling(sampling: Sampling | None, knobs: dict[str, Any]) -> generate_pb2.SamplingParams:
    """Knobs given as keywords override those of `sampling`; an unknown one is a TypeError."""
    known = {f.name for f in dataclasses.fields(Sampling)}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise TypeError(f"unknown sampling option {unknown[0]!r}; "
                        f"known: {', '.join(sorted(known))}")
    return dataclasses.replace(sampling or Sampling(), **knobs).to_pb()


def _channel_credentials(tls: bool, root_certificates: bytes | str | Path | None
                         ) -> grpc.ChannelCredentials | None:
    if root_certificates is not None:
        pem = (root_certificates if isinstance(root_certificates, bytes)
               else Path(root_certificates).read_bytes())
        return grpc.ssl_channel_credentials(root_certificates=pem)
    return grpc.ssl_channel_credentials() if tls else None


class _Settings:
    """What the sync and async clients share: credentials, metadata and request builders."""

    def __init__(self, target: str, api_key: str | None, tls: bool,
                 root_certificates: bytes | str | Path | None, tls_server_name: str | None,
                 timeout: float | None, options: Sequence[tuple[str, Any]]) -> None:
        self.target = target
        self.credentials = _channel_credentials(tls, root_certificates)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout
        self.options = list(options)
        if tls_server_name:
            # Self-signed certificates issued for a name other than the address dialled.
            self.options.append(("grpc.ssl_target_name_override", tls_server_name))

    def call_kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {"metadata": self.metadata,
                "timeout": self.timeout if timeout is None else timeout}


Prompt = str | Sequence[int]  # text, or token ids of the model's tokenizer


def _generate_request(cls: Any, prompt: Prompt, model: str, request_id: str,
                      sampling: Sampling | None, knobs: dict[str, Any]) -> Any:
    params = _sampling(sampling, knobs)
    if isinstance(prompt, str):
        return cls(model=model, prompt=prompt, request_id=request_id, sampling=params)
    return cls(model=model, prompt_token_ids=list(prompt), request_id=request_id,
               sampling=params)


def _load_request(name: str, path: str, device: str | None, dtype: str | None,
                  max_batch_size: int | None, set_default: bool
                  ) -> model_admin_pb2.LoadModelRequest:
    request = model_admin_pb2.LoadModelRequest(name=name, path=path, set_default=set_default)
    if device is not None:
        request.device = device
    if dtype is not None:
        request.dtype = dtype
    if max_batch_size is not None:
        request.max_batch_size = max_batch_size
    return request


# The messages of one StreamGenerate call; leaving a `with` block (or `cancel()`) cancels the
# call, which frees its batch slot on the server.
Stream = CallStream[generate_pb2.StreamGenerateResponse]


class Client(TrainMethods):
    """A blocking client. `timeout` (seconds) is every call's default deadline; each method
    takes its own `timeout` too. `api_key` is sent as `authorization: Bearer <key>`."""

    def __init__(self, target: str = DEFAULT_TARGET, *, api_key: str | None = None,
                 tls: bool = False, root_certificates: bytes | str | Path | None = None,
                 tls_server_name: str | None = None, timeout: float | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self._s = _Settings(target, api_key, tls, root_certificates, tls_server_name, timeout,
                            options)
        if self._s.credentials is None:
            self.channel = grpc.insecure_channel(target, options=self._s.options)
        else:
            self.channel = grpc.secure_channel(target, self._s.credentials,
                                               options=self._s.options)
        self.generate_stub = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.admin_stub = model_admin_pb2_grpc.ModelAdminServiceStub(self.channel)
        self.train_stub = train_pb2_grpc.TrainServiceStub(self.channel)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, **self._s.call_kwargs(timeout))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    # GenerateService
    def generate(self, prompt: Prompt, *, model: str = "", request_id: str = "",
                 sampling: Sampling | None = None, timeout: float | None = None,
                 **knobs: Any) -> generate_pb2.GenerateResponse:
        """All n completions of `prompt` (text or token ids) at once. Knobs: the fields of
        `Sampling`."""
        request = _generate_request(generate_pb2.GenerateRequest, prompt, model, request_id,
                                    sampling, knobs)
        return self._call(self.generate_stub.Generate, request, timeout)

    def stream(self, prompt: Prompt, *, model: str = "", request_id: str = "",
               sampling: Sampling | None = None, timeout: float | None = None,
               **knobs: Any) -> Stream:
        """Tokens as they are generated: an iterator of StreamGenerateResponse."""
        request = _generate_request(generate_pb2.StreamGenerateRequest, prompt, model,
                                    request_id, sampling, knobs)
        return Stream(self._call(self.generate_stub.StreamGenerate, request, timeout))

    def tokenize(self, text: str, *, model: str = "",
                 timeout: float | None = None) -> generate_pb2.TokenizeResponse:
        request = generate_pb2.TokenizeRequest(model=model, text=text)
        return self._call(self.generate_stub.Tokenize, request, timeout)

    def detokenize(self, token_ids: Sequence[int], *, model: str = "",
                   timeout: float | None = None) -> generate_pb2.DetokenizeResponse:
        request = generate_pb2.DetokenizeRequest(model=model, token_ids=list(token_ids))
        return self._call(self.generate_stub.Detokenize, request, timeout)

    # ModelAdminService (needs the admin key when the server has keys)
    def list_models(self, *, timeout: float | None = None) -> model_admin_pb2.ListModelsResponse:
        return self._call(self.admin_stub.ListModels, model_admin_pb2.ListModelsRequest(),
                          timeout)

    def get_model(self, name: str, *, timeout: float | None = None) -> model_admin_pb2.Model:
        request = model_admin_pb2.GetModelRequest(name=name)
        return self._call(self.admin_stub.GetModel, request, timeout).model

    def load_model(self, name: str, path: str, *, device: str | None = None,
                   dtype: str | None = None, max_batch_size: int | None = None,
                   set_default: bool = False, timeout: float | None = None
                   ) -> model_admin_pb2.Model:
        """Load a checkpoint under the server's model roots; returns once it is READY."""
        request = _load_request(name, path, device, dtype, max_batch_size, set_default)
        return self._call(self.admin_stub.LoadModel, request, timeout).model

    def unload_model(self, name: str, *, cancel_inflight: bool = False,
                     timeout: float | None = None) -> model_admin_pb2.UnloadModelResponse:
        request = model_admin_pb2.UnloadModelRequest(name=name, cancel_inflight=cancel_inflight)
        return self._call(self.admin_stub.UnloadModel, request, timeout)

    def set_default_model(self, name: str, *, timeout: float | None = None
                          ) -> model_admin_pb2.SetDefaultModelResponse:
        request = model_admin_pb2.SetDefaultModelRequest(name=name)
        return self._call(self.admin_stub.SetDefaultModel, request, timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


AsyncStream = AsyncCallStream[generate_pb2.StreamGenerateResponse]


class AsyncClient(AsyncTrainMethods):
    """The asyncio client: the same methods as `Client`, awaited; `stream()` returns an
    AsyncStream. Create and use it inside one running event loop."""

    def __init__(self, target: str = DEFAULT_TARGET, *, api_key: str | None = None,
                 tls: bool = False, root_certificates: bytes | str | Path | None = None,
                 tls_server_name: str | None = None, timeout: float | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        self._s = _Settings(target, api_key, tls, root_certificates, tls_server_name, timeout,
                            options)
        if self._s.credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=self._s.options)
        else:
            self.channel = grpc.aio.secure_channel(target, self._s.credentials,
                                                   options=self._s.options)
        self.generate_stub = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.admin_stub = model_admin_pb2_grpc.ModelAdminServiceStub(self.channel)
        self.train_stub = train_pb2_grpc.TrainServiceStub(self.channel)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, **self._s.call_kwargs(timeout))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def generate(self, prompt: Prompt, *, model: str = "", request_id: str = "",
                       sampling: Sampling | None = None, timeout: float | None = None,
                       **knobs: Any) -> generate_pb2.GenerateResponse:
        request = _generate_request(generate_pb2.GenerateRequest, prompt, model, request_id,
                                    sampling, knobs)
        return await self._call(self.generate_stub.Generate, request, timeout)

    def stream(self, prompt: Prompt, *, model: str = "", request_id: str = "",
               sampling: Sampling | None = None, timeout: float | None = None,
               **knobs: Any) -> AsyncStream:
        request = _generate_request(generate_pb2.StreamGenerateRequest, prompt, model,
                                    request_id, sampling, knobs)
        call = self.generate_stub.StreamGenerate(request, **self._s.call_kwargs(timeout))
        return AsyncStream(call)

    async def tokenize(self, text: str, *, model: str = "",
                       timeout: float | None = None) -> generate_pb2.TokenizeResponse:
        request = generate_pb2.TokenizeRequest(model=model, text=text)
        return await self._call(self.generate_stub.Tokenize, request, timeout)

    async def detokenize(self, token_ids: Sequence[int], *, model: str = "",
                         timeout: float | None = None) -> generate_pb2.DetokenizeResponse:
        request = generate_pb2.DetokenizeRequest(model=model, token_ids=list(token_ids))
        return await self._call(self.generate_stub.Detokenize, request, timeout)

    async def list_models(self, *, timeout: float | None = None
                          ) -> model_admin_pb2.ListModelsResponse:
        return await self._call(self.admin_stub.ListModels, model_admin_pb2.ListModelsRequest(),
                                timeout)

    async def get_model(self, name: str, *, timeout: float | None = None
                        ) -> model_admin_pb2.Model:
        request = model_admin_pb2.GetModelRequest(name=name)
        return (await self._call(self.admin_stub.GetModel, request, timeout)).model

    async def load_model(self, name: str, path: str, *, device: str | None = None,
                         dtype: str | None = None, max_batch_size: int | None = None,
                         set_default: bool = False, timeout: float | None = None
                         ) -> model_admin_pb2.Model:
        request = _load_request(name, path, device, dtype, max_batch_size, set_default)
        return (await self._call(self.admin_stub.LoadModel, request, timeout)).model

    async def unload_model(self, name: str, *, cancel_inflight: bool = False,
                           timeout: float | None = None) -> model_admin_pb2.UnloadModelResponse:
        request = model_admin_pb2.UnloadModelRequest(name=name, cancel_inflight=cancel_inflight)
        return await self._call(self.admin_stub.UnloadModel, request, timeout)

    async def set_default_model(self, name: str, *, timeout: float | None = None
                                ) -> model_admin_pb2.SetDefaultModelResponse:
        request = model_admin_pb2.SetDefaultModelRequest(name=name)
        return await self._call(self.admin_stub.SetDefaultModel, request, timeout)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
