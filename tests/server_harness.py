"""A real nanoLLM gRPC server on port 0, run on its own event loop in a background thread, and
tiny checkpoints for it. Tests talk to it through the generated stubs over a real channel.

    with ServerThread(server_config(ckpt, tmp_path)) as srv:
        srv.generate.Generate(generate_pb2.GenerateRequest(prompt="hi"))
        srv.engine().steps            # the engine's counters, for what a client cannot see
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from decoding_refs import random_model
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from nanollm.checkpoint import save_checkpoint
from nanollm.server_config import ServerConfig
from nanollm.v1 import generate_pb2, generate_pb2_grpc, model_admin_pb2_grpc
from server.app import NanoLLMServer
from server.engine import Engine
from server.metrics import ServerMetrics

T = TypeVar("T")


GRPCURL = str(Path(sys.executable).parent / "grpcurl")  # installed with the dev extras


def tiny_byte_checkpoint(folder: Path, block_size: int = 64, seed: int = 0) -> Path:
    """decoding_refs.random_model (a 2-layer byte-level GPT with large random weights: greedy
    choices are not ties and do not just repeat the input), saved as a nanoLLM checkpoint."""
    model = random_model(block_size=block_size, seed=seed)
    return save_checkpoint(folder, model.state_dict(), model.config, tokenizer="byte")


def server_config(checkpoint: Path, tmp_path: Path, **overrides: Any) -> ServerConfig:
    """Loopback, any free port, CPU fp32, no metrics port, models under tmp_path, a jobs root
    of its own (a server locks its jobs root)."""
    args: dict[str, Any] = dict(
        checkpoint=str(checkpoint), grpc_port=0, metrics_port=-1, device="cpu",
        dtype="float32", model_roots=[str(tmp_path)], log_dir=str(tmp_path / "logs"),
        jobs_root=tempfile.mkdtemp(prefix="jobs-", dir=tmp_path), max_batch_size=16,
        max_queue=64)
    args.update(overrides)
    return ServerConfig(**args)


class ServerThread:
    """NanoLLMServer on a private event loop; stubs on a channel to it."""

    def __init__(self, config: ServerConfig, *, load_default: bool = True,
                 metrics: ServerMetrics | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = NanoLLMServer(config, metrics or ServerMetrics())
        self.port = self.call(self.server.start())
        self.target = f"127.0.0.1:{self.port}"
        if load_default:
            self.call(self.server.load_default_model())
        self.channel = grpc.insecure_channel(self.target)
        self.generate = generate_pb2_grpc.GenerateServiceStub(self.channel)
        self.admin = model_admin_pb2_grpc.ModelAdminServiceStub(self.channel)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return self.call_soon(coro).result(timeout)

    def call_soon(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the server's loop; its result comes later."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def engine(self, name: str = "gpt") -> Engine:
        engine = self.server.registry.get(name).engine
        assert engine is not None
        return engine

    def close(self, grace: float = 0.0) -> None:
        self.channel.close()
        self.call(self.server.shutdown(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def greedy(prompt: str, max_tokens: int = 16, **sampling: Any) -> generate_pb2.GenerateRequest:
    params = dict(max_tokens=max_tokens, temperature=0.0, stop_at_eos=False)
    params.update(sampling)
    return generate_pb2.GenerateRequest(prompt=prompt,
                                        sampling=generate_pb2.SamplingParams(**params))


def stream_request(prompt: str, max_tokens: int = 16, **sampling: Any
                   ) -> generate_pb2.StreamGenerateRequest:
    req = greedy(prompt, max_tokens, **sampling)
    return generate_pb2.StreamGenerateRequest(prompt=req.prompt, sampling=req.sampling)


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError a call raises (fails the test if it succeeds)."""
    try:
        call()
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded; an error status was expected")


def field_violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) pairs of the google.rpc.BadRequest detail of an error status."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def retry_delay(err: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
             ) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def queue_held(srv: ServerThread, api_key: str) -> Iterator[None]:
    """A server with one batch slot and one queue place, filled: one long request running and
    one waiting, so the next is refused. Both are cancelled on leaving, and the engine is idle
    again. End-of-text is off: a held request that drew it would end and free the queue."""
    engine = srv.engine()
    metadata = (("authorization", f"Bearer {api_key}"),)
    holders = [srv.generate.StreamGenerate(generate_pb2.StreamGenerateRequest(
        prompt="hold", sampling=generate_pb2.SamplingParams(max_tokens=90_000,
                                                            stop_at_eos=False)),
        metadata=metadata) for _ in range(2)]
    try:
        wait_for(lambda: engine.num_waiting == 1, timeout=30,
                 what="one running and one queued request")
        yield
    finally:
        for call in holders:
            call.cancel()
    wait_for(lambda: engine.num_running == 0 and engine.num_waiting == 0,
             what="the held requests to be cancelled")
