"""ServerConfig: the settings of `gpt-server` (gRPC server and REST gateway), declared like the
other configs in nanollm/config.py: each field's help text and range drive validation, config
files and CLI flags. docs/server.md describes each field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nanollm.config import MAX_THREADS, BaseConfig, ConfigError, option


@dataclass
class ServerConfig(BaseConfig):
    """The gRPC server and REST gateway (`gpt-server`); docs/server.md describes each field."""

    # Keys of nanoLLM_gpt's server files that do not exist here, with what to do instead.
    OLD_KEYS: ClassVar[dict[str, str]] = {
        "checkpoint_path": "it is called checkpoint here",
        "cors_enabled": "use cors_origins, the list of origins allowed (empty: CORS off)",
        "debug": "remove it: the server logs every request (log_dir holds server.log)",
        "default_generation": "remove it: requests set their own sampling; unset knobs take "
                              "GenerationConfig's defaults",
    }

    host: str = option("127.0.0.1", "address the servers bind to (loopback: this machine only)")
    port: int = option(8080, "REST gateway (OpenAI API and web UI) port (0 = any free port)",
                       min=0, max=65535)
    grpc_only: bool = option(False, "serve gRPC only: no REST gateway and web UI")
    grpc_target: str | None = option(None, "serve only the REST gateway and web UI, in front of "
                                           "the gRPC server at HOST:PORT (plaintext)")
    grpc_host: str | None = option(None, "address the gRPC server binds to (default: host)")
    grpc_port: int = option(50051, "gRPC port (0 = any free port)", min=0, max=65535)
    metrics_host: str | None = option(None, "address of the Prometheus /metrics endpoint "
                                            "(default: host)")
    metrics_port: int = option(9090, "Prometheus /metrics port (0 = any free port, -1 = off)",
                               min=-1, max=65535)
    checkpoint: str | None = option(None, "model to serve: checkpoint folder, HF folder or ckpt.pt"
                                          " (default: the shipped demo model)")
    model_type: str | None = option(None, "serve a GPT-2 preset from a local HF folder or cache")
    model_name: str = option("gpt", "name clients use for the default model")
    device: str = option("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = option("auto", "'auto', 'float32', 'bfloat16' or 'float16'",
                        choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool = option(False, "torch.compile the model")
    threads: int | None = option(None, "torch CPU threads (default: 1 for models under 20M "
                                       "parameters, else all cores)", min=1, max=MAX_THREADS)
    max_batch_size: int = option(16, "sequences decoded together per model (KV cache rows)",
                                 min=1, max=1024)
    max_queue: int = option(64, "waiting requests per model before RESOURCE_EXHAUSTED", min=1)
    prefill_budget: int = option(512, "prompt tokens computed per decode step, so a long prompt "
                                      "never stalls the running streams for long", min=1)
    max_tokens_limit: int = option(4096, "largest max_tokens a request may ask for", min=1)
    grace_period: float = option(30.0, "seconds in-flight requests get to finish on SIGTERM "
                                       "before they are cancelled", min=0.0)
    # option() returns a dataclasses.field with default_factory, so nothing mutable is shared.
    model_roots: list[str] = option(  # noqa: RUF009
        default_factory=list, help="folders LoadModel may load from (repeatable; default: "
                                   "models/ and the shipped demo model's folder)")
    api_keys: list[str] = option(  # noqa: RUF009
        default_factory=list, help="user API keys (repeatable; prefer api_key_file: flags show "
                                   "in the process list)")
    api_key_file: str | None = option(None, "file of user API keys, one per line")
    admin_keys: list[str] = option(  # noqa: RUF009
        default_factory=list, help="admin API keys, needed for ModelAdminService (repeatable)")
    admin_key_file: str | None = option(None, "file of admin API keys, one per line")
    tls_cert: str | None = option(None, "PEM certificate chain: serve gRPC and REST over TLS")
    tls_key: str | None = option(None, "PEM private key of tls_cert")
    tls_server_name: str = option("localhost", "name in tls_cert that the built-in REST gateway "
                                               "checks when it dials the gRPC port over TLS")
    jobs_root: str = option("jobs", "folder of the training jobs (TrainService): each job's "
                                    "spec, state, log and checkpoints live in a folder here")
    data_roots: list[str] = option(  # noqa: RUF009
        default_factory=list, help="folders training jobs may read data from (repeatable; "
                                   "default: data/ and the bundled corpus folder)")
    max_concurrent_jobs: int = option(1, "training jobs running at once; others wait in order",
                                      min=1, max=256)
    max_upload_bytes: int = option(64 << 20, "largest training text a StartJob may upload",
                                   min=1)
    max_download_bytes: int = option(1 << 30, "largest training text a job may download from "
                                              "an http(s) URL", min=1)
    allow_private_urls: bool = option(False, "let training jobs download from loopback, private,"
                                             " link-local and cloud metadata addresses (local "
                                             "use only: clients choose the URLs)")
    log_dir: str = option("logs", "server log folder (rotating server.log)")
    cors_origins: list[str] = option(  # noqa: RUF009
        default_factory=list, help="browser origins (https://app.example.com) allowed to call "
                                   "the REST API from other sites (repeatable; default: none, "
                                   "CORS off)")

    def validate(self) -> None:
        super().validate()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("ServerConfig.tls_cert and ServerConfig.tls_key go together: give "
                              "both to serve over TLS, or neither")
        for name in ("model_roots", "data_roots", "api_keys", "admin_keys", "cors_origins"):
            if not all(isinstance(v, str) and v for v in getattr(self, name)):
                raise ConfigError(f"ServerConfig.{name} must be a list of non-empty strings")
        if self.grpc_target is not None:
            self._check_gateway_only()

    def _check_gateway_only(self) -> None:
        """grpc_target runs the gateway alone: settings of a local model make no sense then."""
        target = self.grpc_target or ""
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"ServerConfig.grpc_target = {target!r} must be HOST:PORT")
        if self.grpc_only:
            raise ConfigError("ServerConfig.grpc_only and ServerConfig.grpc_target exclude each "
                              "other: grpc_only serves gRPC alone, grpc_target the gateway alone")
        if self.checkpoint is not None or self.model_type is not None:
            raise ConfigError("ServerConfig.grpc_target serves the gateway alone: the model "
                              "(checkpoint, model_type) belongs to the gRPC server it names")
