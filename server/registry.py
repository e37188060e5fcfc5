"""The models a server serves, by name: loading, lookup, default model, unloading.

    registry = ModelRegistry(settings, metrics, on_change=update_health)
    await registry.load(LoadSpec(name="small", path="small-ckpt", ...))   # under a model root
    entry = registry.serving("")          # the default model's entry, READY, with its engine
    await registry.unload("small", cancel_inflight=False)

Every method runs on the server's event loop, which alone changes the table; the slow parts
(reading a checkpoint, moving it to the device, waiting for in-flight requests) run in worker
threads, so loading or unloading one model never stalls requests to the others. A load or unload
goes on to its end even when the client that asked for it goes away.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import torch

from nanollm.checkpoint import CheckpointError
from nanollm.config import ConfigError, GenerationConfig, ModelConfig
from nanollm.loader import LoadedModel, ModelLoader, ModelNotFoundError
from nanollm.v1 import model_admin_pb2
from server.engine import Engine, EngineSettings
from server.errors import (
    AlreadyExistsError,
    CancelledError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServerError,
    UnavailableError,
)
from server.events import DoneEvent
from server.metrics import ServerMetrics
from server.path_policy import relative_to_root, resolve_under
from server.validation import GenerationRequest, LoadSpec, ModelLimits

log = logging.getLogger(__name__)

T = TypeVar("T")


class ModelState(enum.Enum):
    LOADING = model_admin_pb2.MODEL_STATE_LOADING
    READY = model_admin_pb2.MODEL_STATE_READY
    FAILED = model_admin_pb2.MODEL_STATE_FAILED
    UNLOADING = model_admin_pb2.MODEL_STATE_UNLOADING


_SOURCE_KINDS = {"nanollm": model_admin_pb2.SOURCE_KIND_NANOLLM,
                 "huggingface": model_admin_pb2.SOURCE_KIND_HF,
                 "nanogpt": model_admin_pb2.SOURCE_KIND_NANOGPT}



async def in_own_thread(fn: Callable[[], T]) -> T:
    """fn() in a new thread that exits when it is done.

    Why not asyncio.to_thread: a thread that runs OpenMP-parallel torch work (loading, packing
    weights, zeroing the KV cache) keeps an OpenMP thread pool for as long as it lives, and a
    second pool beside the engine thread's made every CPU decode step about 20% slower (34 vs
    28 ms for GPT-2 124M on 2 cores). Executor threads live on; this one does not, so the
    engine thread is the only one left holding a pool."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="model-load", daemon=True).start()
    return await done


@dataclass(frozen=True)
class RegistrySettings:
    model_roots: list[Path]
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    engine: EngineSettings = field(default_factory=EngineSettings)


@dataclass(eq=False)
class ModelEntry:
    """One name in the table; `engine` and the shape fields are set once it is READY."""

    name: str
    source_path: str
    state: ModelState = ModelState.LOADING
    reason: str = ""
    source_kind: str = ""
    engine: Engine | None = None
    limits: ModelLimits | None = None
    config: ModelConfig | None = None
    parameter_count: int = 0
    device: str = ""
    dtype: str = ""
    max_batch_size: int = 0
    loaded_at: datetime | None = None
    error: ServerError | None = None  # why loading failed (state FAILED)

    def to_pb(self, is_default: bool) -> model_admin_pb2.Model:
        pb = model_admin_pb2.Model(
            name=self.name, state=self.state.value, reason=self.reason,
            source_path=self.source_path, is_default=is_default,
            source_kind=_SOURCE_KINDS.get(self.source_kind, 0),
            parameter_count=self.parameter_count, device=self.device, dtype=self.dtype,
            max_batch_size=self.max_batch_size)
        if self.config is not None and self.limits is not None:
            c = self.config
            pb.n_layer, pb.n_head, pb.n_embd = c.n_layer, c.n_head, c.n_embd
            pb.block_size, pb.vocab_size = c.block_size, c.vocab_size
            pb.tokenizer = self.limits.tokenizer.name
        if self.loaded_at is not None:
            pb.loaded_at.FromDatetime(self.loaded_at)
        if self.engine is not None:
            pb.active_requests, pb.queued_requests = (self.engine.num_running,
                                                      self.engine.num_waiting)
        return pb


class ModelRegistry:
    """name -> ModelEntry, the default model's name, and the server's draining flag."""

    def __init__(self, settings: RegistrySettings, metrics: ServerMetrics,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._on_change = on_change
        self._entries: dict[str, ModelEntry] = {}
        self.default_name: str | None = None
        self.draining = False

    # ------------------------------------------------------------------------------------------
    # lookup

    def entries(self) -> list[ModelEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise NotFoundError(f"no model named {name!r} (ListModels shows the loaded "
                                "ones)") from None

    def serving(self, name: str) -> ModelEntry:
        """The READY entry a generation request goes to ("" = the default model)."""
        if self.draining:
            raise UnavailableError("the server is shutting down; send the request elsewhere",
                                   reason="draining")
        if not name:
            if self.default_name is None:
                raise NotFoundError("no default model is set; name a model (ListModels shows "
                                    "them)")
            name = self.default_name
        entry = self._entries.get(name)
        if entry is None or entry.state is ModelState.UNLOADING:
            raise NotFoundError(f"model {name!r} is not loaded")
        if entry.state is ModelState.LOADING:
            raise UnavailableError(f"model {name!r} is still loading; retry shortly",
                                   reason="loading")
        if entry.state is ModelState.FAILED:
            raise NotFoundError(f"model {name!r} is not loaded: loading it failed: "
                                f"{entry.reason}")
        return entry

    @property
    def default_ready(self) -> bool:
        entry = self._entries.get(self.default_name or "")
        return entry is not None and entry.state is ModelState.READY and not self.draining

    # ------------------------------------------------------------------------------------------
    # load

    async def load(self, spec: LoadSpec) -> ModelEntry:
        """Load a checkpoint from under the model roots (ModelAdmin.LoadModel)."""
        self._refuse_while_draining()
        self._claim_name(spec.name)
        path = resolve_under(spec.path, self.settings.model_roots, "model")
        shown = relative_to_root(path, self.settings.model_roots)
        return await self._load(spec.name, shown, spec.set_default, checkpoint=path,
                                device=spec.device, dtype=spec.dtype,
                                max_batch_size=spec.max_batch_size)

    async def load_from(self, spec: LoadSpec, path: Path, shown: str) -> ModelEntry:
        """Load a checkpoint the server located itself (a training job's), which is therefore
        not held to the model roots; `shown` is what ListModels says it came from."""
        self._refuse_while_draining()
        self._claim_name(spec.name)
        return await self._load(spec.name, shown, spec.set_default, checkpoint=path,
                                device=spec.device, dtype=spec.dtype,
                                max_batch_size=spec.max_batch_size)

    def _claim_name(self, name: str) -> None:
        """A name is free when unused or when its model FAILED to load (a retry after fixing a
        path replaces the failed entry); a LOADING or READY model keeps it."""
        entry = self._entries.get(name)
        if entry is None:
            return
        if entry.state is not ModelState.FAILED:
            raise AlreadyExistsError(f"a model named {name!r} already exists; unload it "
                                     "first or pick another name")
        log.info("model %s: replacing its failed load (%s)", name, entry.reason)
        del self._entries[name]

    async def load_startup(self, name: str, checkpoint: str | None,
                           model_type: str | None) -> ModelEntry:
        """The operator's model from the command line (not held to the model roots), made the
        default model; the demo model when both are None."""
        shown = checkpoint or model_type or str(ModelLoader.default_checkpoint())
        self.default_name = name
        return await self._load(name, shown, True, checkpoint=checkpoint, model_type=model_type)

    async def _load(self, name: str, shown: str, set_default: bool, **source: object
                    ) -> ModelEntry:
        entry = ModelEntry(name=name, source_path=shown)
        self._entries[name] = entry
        self._on_change()
        # shield: the load finishes (READY or FAILED) even if the caller's RPC is cancelled.
        await asyncio.shield(asyncio.ensure_future(self._finish_load(entry, set_default,
                                                                     **source)))
        if entry.error is not None:
            raise entry.error
        return entry

    async def _finish_load(self, entry: ModelEntry, set_default: bool, *,
                           checkpoint: str | Path | None = None, model_type: str | None = None,
                           device: str | None = None, dtype: str | None = None,
                           max_batch_size: int | None = None) -> None:
        s = self.settings
        engine_settings = s.engine if max_batch_size is None else EngineSettings(
            max_batch_size=max_batch_size, max_queue=s.engine.max_queue,
            prefill_budget=s.engine.prefill_budget)
        started = time.monotonic()
        def build() -> tuple[LoadedModel, Engine]:
            loaded = ModelLoader.load(checkpoint, model_type, device or s.device,
                                      dtype or s.dtype, s.compile)
            return loaded, Engine(entry.name, loaded.model, loaded.tokenizer, engine_settings,
                                  self.metrics)  # allocates the KV cache

        try:
            loaded, engine = await in_own_thread(build)
            engine.start()
            entry.engine = engine
            await self._warm_up(engine, loaded)
        except Exception as exc:  # recorded on the entry: FAILED with the reason
            if entry.engine is not None:
                await asyncio.to_thread(entry.engine.stop)
                entry.engine = None
            error = _load_error(exc, entry.source_path, checkpoint)
            entry.state, entry.reason, entry.error = ModelState.FAILED, error.message, error
            log.warning("model %s: loading %s failed: %s", entry.name, entry.source_path,
                        error.message)
            self._on_change()
            return
        self._describe(entry, loaded, engine_settings)
        entry.state = ModelState.READY
        if set_default:
            self.default_name = entry.name
        log.info("model %s: READY in %.1f s (%s, %s %s, %d parameters, batch %d)", entry.name,
                 time.monotonic() - started, entry.source_path, entry.device, entry.dtype,
                 entry.parameter_count, entry.max_batch_size)
        self._on_change()

    def _describe(self, entry: ModelEntry, loaded: LoadedModel, settings: EngineSettings) -> None:
        weight = loaded.model.lm_head.weight
        entry.source_kind = loaded.kind
        entry.config = loaded.config
        entry.limits = ModelLimits(entry.name, loaded.tokenizer, loaded.config.block_size,
                                   settings.max_batch_size)
        entry.parameter_count = sum(p.numel() for p in loaded.model.parameters())
        entry.device = str(weight.device)
        entry.dtype = str(weight.dtype).removeprefix("torch.")
        entry.max_batch_size = settings.max_batch_size
        entry.loaded_at = datetime.now(timezone.utc)

    async def _warm_up(self, engine: Engine, loaded: LoadedModel) -> None:
        """One tiny greedy generation through the engine, so the first client does not pay for
        lazy initialisation (kernels, allocator, packed weights)."""
        tokenizer = loaded.tokenizer
        prompt = tokenizer.encode("Hello")[:1] or [tokenizer.eot_token or 0]
        config = GenerationConfig(max_new_tokens=2, temperature=0.0, stop_at_eos=False)
        request = GenerationRequest(request_id="warmup", model=engine.name, prompt_ids=prompt,
                                    config=config, max_tokens=2, n=1, seed=0)
        async for events in engine.submit(request, asyncio.get_running_loop()):
            done = events[-1]
            if isinstance(done, DoneEvent) and done.error is not None:
                raise done.error

    # ------------------------------------------------------------------------------------------
    # unload, default, shutdown

    async def unload(self, name: str, cancel_inflight: bool) -> tuple[int, int]:
        """Unload a model; returns (requests allowed to finish, requests cancelled)."""
        self._refuse_while_draining()
        entry = self.get(name)
        if entry.state is ModelState.LOADING:
            raise FailedPreconditionError(f"model {name!r} is still loading; unload it once it "
                                          "is READY or FAILED")
        if entry.state is ModelState.UNLOADING:
            raise FailedPreconditionError(f"model {name!r} is already being unloaded")
        entry.state = ModelState.UNLOADING
        if self.default_name == name:
            self.default_name = None
        self._on_change()
        task = asyncio.ensure_future(self._finish_unload(entry, cancel_inflight))
        return await asyncio.shield(task)

    async def _finish_unload(self, entry: ModelEntry, cancel_inflight: bool) -> tuple[int, int]:
        engine = entry.engine
        completed = cancelled = 0
        if engine is not None:
            engine.drain()
            done_before, cancelled_before = engine.completed, engine.cancelled
            if cancel_inflight:
                engine.cancel_all(CancelledError(f"model {entry.name!r} was unloaded"))
            await asyncio.to_thread(engine.wait_idle)
            completed = engine.completed - done_before
            cancelled = engine.cancelled - cancelled_before
            await asyncio.to_thread(engine.stop)
        del self._entries[entry.name]
        entry.engine = None
        _free_memory()
        log.info("model %s: unloaded (%d requests finished, %d cancelled)", entry.name,
                 completed, cancelled)
        self._on_change()
        return completed, cancelled

    def set_default(self, name: str) -> tuple[ModelEntry, str]:
        """Make a READY model the default; returns it and the previous default's name."""
        self._refuse_while_draining()
        entry = self.get(name)
        if entry.state is not ModelState.READY:
            raise FailedPreconditionError(f"model {name!r} is {entry.state.name}, not READY; "
                                          "only a READY model can be the default")
        previous, self.default_name = self.default_name or "", name
        self._on_change()
        return entry, previous

    async def shutdown(self, grace: float) -> None:
        """Stop admitting, let in-flight requests finish for up to `grace` seconds, cancel the
        rest, then stop every engine."""
        self.draining = True
        self._on_change()
        engines = [e.engine for e in self._entries.values() if e.engine is not None]
        for engine in engines:
            engine.drain()
        deadline = time.monotonic() + grace
        for engine in engines:
            left = max(0.0, deadline - time.monotonic())
            if not await asyncio.to_thread(engine.wait_idle, left):
                n = engine.cancel_all(CancelledError("the server shut down before the request "
                                                     "finished"))
                log.warning("model %s: cancelled %d requests still running after the %.0f s "
                            "grace period", engine.name, n, grace)
        for engine in engines:
            await asyncio.to_thread(engine.stop)

    def _refuse_while_draining(self) -> None:
        if self.draining:
            raise UnavailableError("the server is shutting down", reason="draining")


def _load_error(exc: Exception, shown: str, path: str | Path | None) -> ServerError:
    """What a failed load tells the client: the checkpoint's problem, with paths shown
    relative to the model root (the traceback goes to the log when the checkpoint is fine)."""
    if isinstance(exc, ServerError):
        return exc
    text = str(exc) if path is None else str(exc).replace(str(path), shown)
    if isinstance(exc, ModelNotFoundError):
        return NotFoundError(text)
    if isinstance(exc, CheckpointError | ConfigError | ValueError):
        return InvalidArgumentError([("path", text)])
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return ResourceExhaustedError(f"not enough memory to load {shown}: {exc}")
    log.error("loading %s failed", shown, exc_info=exc)
    return InternalError(f"loading {shown} failed on the server; its log has the details")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
