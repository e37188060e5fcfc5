"""Build, run and stop the gRPC server.

    server = NanoLLMServer(config)                   # server/launcher.py runs it; tests too
    port = await server.start()                      # bound, answering; health NOT_SERVING
    await server.load_default_model()                # READY and warmed up; health SERVING
    await server.shutdown(grace=30)                  # drain, finish or cancel, stop

One grpc.aio server holds GenerateService, ModelAdminService, TrainService, grpc.health.v1 and
reflection (so grpcurl needs no proto files), behind two interceptors: errors/metrics/request log
outside, API keys inside. TLS when a certificate and key are configured. Prometheus /metrics on
its own port. Training jobs run as child processes of a JobManager (trainer/jobs) on the jobs
root, which it locks once the ports are bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import nanollm
from nanollm.config import ConfigError, GenerationConfig
from nanollm.loader import ModelLoader
from nanollm.server_config import ServerConfig
from nanollm.v1 import generate_pb2_grpc, model_admin_pb2_grpc, train_pb2_grpc
from server.admin_service import ModelAdminService
from server.auth import AuthInterceptor, KeyRing
from server.engine import EngineSettings
from server.errors import ServerError
from server.generate_service import GenerateService
from server.health import ADMIN_SERVICE, GENERATE_SERVICE, SERVING, ServerHealth
from server.interceptors import ErrorInterceptor
from server.metrics import ServerMetrics
from server.reflection import SERVICE_NAME as REFLECTION_SERVICE
from server.reflection import enable_reflection
from server.registry import ModelEntry, ModelRegistry, RegistrySettings
from server.train_service import SPEC_RULES, TRAIN_SERVICE, TrainService
from server.validation import LoadSpec
from trainer.jobs.manager import JobManager, JobsSettings
from trainer.jobs.spec import SpecLimits

# grpc enables SO_REUSEPORT by default: a second server on a busy port would bind silently.
GRPC_OPTIONS = [("grpc.so_reuseport", 0)]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def model_roots(config: ServerConfig) -> list[Path]:
    """The configured roots, or models/ and the shipped demo model's folder."""
    if config.model_roots:
        return [Path(r).expanduser() for r in config.model_roots]
    return [Path("models"), ModelLoader.default_checkpoint().parent]


def data_roots(config: ServerConfig) -> list[Path]:
    """The configured data roots, or data/ and the bundled corpus folder."""
    if config.data_roots:
        return [Path(r).expanduser() for r in config.data_roots]
    return [Path("data"), Path(nanollm.__file__).parent / "assets" / "corpus"]


def job_manager(config: ServerConfig, metrics: ServerMetrics,
                on_succeeded: Callable[[str, str, Path], None]) -> JobManager:
    limits = SpecLimits(data_roots=data_roots(config), model_roots=model_roots(config),
                        max_upload_bytes=config.max_upload_bytes,
                        max_download_bytes=config.max_download_bytes,
                        allow_private_urls=config.allow_private_urls)
    # Absolute: each job's process runs in its own folder, where a relative root would not resolve.
    settings = JobsSettings(root=Path(config.jobs_root).expanduser().resolve(), limits=limits,
                            max_concurrent=config.max_concurrent_jobs)
    return JobManager(settings, SPEC_RULES, metrics=metrics, on_succeeded=on_succeeded)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        cert = Path(config.tls_cert).read_bytes()
        key = Path(config.tls_key).read_bytes()
    except OSError as exc:
        raise ConfigError(f"TLS file cannot be read: {exc}") from exc
    return grpc.ssl_server_credentials([(key, cert)])


class NanoLLMServer:
    """The server's parts, wired together; see the module docstring."""

    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServerMetrics()
        self.keys = KeyRing.load(config.api_keys, config.api_key_file, config.admin_keys,
                                 config.admin_key_file)
        self.credentials = _tls_credentials(config)
        engine = EngineSettings(max_batch_size=config.max_batch_size, max_queue=config.max_queue,
                                prefill_budget=config.prefill_budget)
        self.registry = ModelRegistry(
            RegistrySettings(model_roots=model_roots(config), device=config.device,
                             dtype=config.dtype, compile=config.compile, engine=engine),
            self.metrics, on_change=self._registry_changed)
        self.jobs = job_manager(config, self.metrics, self._job_succeeded)
        self.health: ServerHealth | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health_task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return _address(self.config.grpc_host or self.config.host, self.port or 0)

    async def start(self) -> int:
        """Bind and start answering (the default model is not loaded yet); returns the port."""
        self._loop = asyncio.get_running_loop()
        self.health = ServerHealth()
        await self.health.update(default_ready=False)
        await self.health.servicer.set(TRAIN_SERVICE, SERVING)
        # Room for a StartJob that uploads max_upload_bytes of text.
        size = ("grpc.max_receive_message_length", self.config.max_upload_bytes + (1 << 20))
        server = grpc.aio.server(interceptors=[ErrorInterceptor(self.metrics),
                                               AuthInterceptor(self.keys)],
                                 options=[*GRPC_OPTIONS, size])
        generate_pb2_grpc.add_GenerateServiceServicer_to_server(
            GenerateService(self.registry, GenerationConfig(), self.config.max_tokens_limit),
            server)
        model_admin_pb2_grpc.add_ModelAdminServiceServicer_to_server(
            ModelAdminService(self.registry, self.jobs), server)
        train_pb2_grpc.add_TrainServiceServicer_to_server(TrainService(self.jobs), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        enable_reflection([GENERATE_SERVICE, ADMIN_SERVICE, TRAIN_SERVICE, HEALTH_SERVICE,
                           REFLECTION_SERVICE], server)
        wanted = _address(self.config.grpc_host or self.config.host, self.config.grpc_port)
        try:
            if self.credentials is None:
                self.port = server.add_insecure_port(wanted)
            else:
                self.port = server.add_secure_port(wanted, self.credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {wanted}: {exc}") from exc
        if self.config.metrics_port >= 0:
            where = _address(self.config.metrics_host or self.config.host,
                             self.config.metrics_port)
            try:
                self.metrics_port = self.metrics.start_http(
                    self.config.metrics_host or self.config.host, self.config.metrics_port)
            except OSError as exc:
                raise ConfigError(f"cannot serve metrics on {where}: {exc.strerror}") from exc
        await asyncio.to_thread(self.jobs.start)  # settles jobs a previous server left
        await server.start()
        self._server = server
        return self.port

    async def load_default_model(self) -> ModelEntry:
        """Load, warm up and make default the configured model; health turns SERVING."""
        c = self.config
        entry = await self.registry.load_startup(c.model_name, c.checkpoint, c.model_type)
        await self._update_health()
        return entry

    async def shutdown(self, grace: float) -> None:
        """Health NOT_SERVING, new requests UNAVAILABLE, in-flight ones get `grace` seconds to
        finish and are then cancelled; then the server and the engines stop."""
        if self.health is not None:
            await self.health.drain()
        # Running jobs save and stop (INTERRUPTED, resumable) while requests finish.
        await asyncio.gather(self.registry.shutdown(grace),
                             asyncio.to_thread(self.jobs.shutdown, grace))
        if self._server is not None:
            await self._server.stop(grace=1.0)
        self.metrics.stop_http()

    def _job_succeeded(self, job_id: str, model_name: str, folder: Path) -> None:
        """load_when_done: called on the job supervisor thread, so the load is scheduled on the
        server's loop; its outcome is recorded on the job (Job.loaded_model or its reason)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._load_job_model(job_id, model_name, folder),
                                             self._loop)

    async def _load_job_model(self, job_id: str, model_name: str, folder: Path) -> None:
        error = None
        try:
            # A resumed job that finishes again replaces the model its earlier run loaded
            # under this name (waiting for that model's requests), and keeps it the default.
            was_default = await self._unload_earlier_run(job_id, model_name)
            spec = LoadSpec(name=model_name, path="", device=None, dtype=None,
                            max_batch_size=None, set_default=was_default, job_id=job_id)
            await self.registry.load_from(spec, folder, f"job {job_id} ({folder.name})")
        except ServerError as exc:
            error = exc.message
        await asyncio.to_thread(self.jobs.note_loaded, job_id, model_name, error)

    async def _unload_earlier_run(self, job_id: str, model_name: str) -> bool:
        """Unload `model_name` if an earlier run of this job loaded it; returns whether it was
        the default model. A model of that name from elsewhere is left alone (the load then
        fails with ALREADY_EXISTS, recorded on the job)."""
        entry = next((e for e in self.registry.entries() if e.name == model_name), None)
        if entry is None or not entry.source_path.startswith(f"job {job_id} "):
            return False
        was_default = self.registry.default_name == model_name
        await self.registry.unload(model_name, cancel_inflight=False)
        return was_default

    def _registry_changed(self) -> None:
        """Health follows the default model; updates run in order on the event loop."""
        previous = self._health_task

        async def update() -> None:
            if previous is not None:
                await previous
            await self._update_health()

        self._health_task = asyncio.get_running_loop().create_task(update())

    async def _update_health(self) -> None:
        if self.health is not None:
            await self.health.update(self.registry.default_ready)

