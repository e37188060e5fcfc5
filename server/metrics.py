"""Prometheus metrics of the gRPC server, served on their own HTTP port.

The engine threads and the servicers report through one `ServerMetrics` object; prometheus-client
is thread-safe, so any thread may call it. Names follow Prometheus conventions (base units,
`_total` counters) and are listed with example queries in docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

# Latency buckets in seconds. TTFT spans a cached tiny model on a GPU (~1 ms) to a long queue on
# a busy CPU (tens of seconds); inter-token latency is one decode step (~1 ms to ~1 s).
TTFT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
ITL_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)
E2E_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    60.0, 120.0, 300.0,
)
QUEUE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)


class ServerMetrics:
    """Every metric the server exports, in one registry.

    `registry=None` makes a private registry with the process, platform and GC collectors, so
    several servers in one process (tests) never collide in prometheus-client's global one.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        self.registry = registry
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

        self._requests = Counter(
            "nanollm_requests", "Finished RPCs by full method name and gRPC status code.",
            ["method", "code"], registry=registry,
        )
        self._e2e = Histogram(
            "nanollm_e2e_request_latency_seconds",
            "Wall-clock time of an RPC from arrival to its last response message.",
            ["method"], buckets=E2E_BUCKETS, registry=registry,
        )
        self._queue = Histogram(
            "nanollm_queue_time_seconds",
            "Time a request waited in the queue before joining the running batch.",
            ["model"], buckets=QUEUE_BUCKETS, registry=registry,
        )
        self._ttft = Histogram(
            "nanollm_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            ["model"], buckets=TTFT_BUCKETS, registry=registry,
        )
        self._itl = Histogram(
            "nanollm_inter_token_latency_seconds",
            "Time between two consecutive generated tokens of one sequence.",
            ["model"], buckets=ITL_BUCKETS, registry=registry,
        )
        self._batch = Histogram(
            "nanollm_batch_size", "Sequences in the batch at each decode step.",
            ["model"], buckets=BATCH_BUCKETS, registry=registry,
        )
        self._prompt_tokens = Counter(
            "nanollm_prompt_tokens", "Prompt tokens of admitted requests (once per request).",
            ["model"], registry=registry,
        )
        self._generation_tokens = Counter(
            "nanollm_generation_tokens", "Generated tokens, over all choices.",
            ["model"], registry=registry,
        )
        self._running = Gauge(
            "nanollm_requests_running", "Sequences in the running batch.",
            ["model"], registry=registry,
        )
        self._waiting = Gauge(
            "nanollm_requests_waiting", "Requests waiting in the queue.",
            ["model"], registry=registry,
        )
        self._kv_usage = Gauge(
            "nanollm_kv_cache_usage_ratio",
            "Fraction of the KV cache's token capacity holding tokens (0-1).",
            ["model"], registry=registry,
        )
        self._rejections = Counter(
            "nanollm_rejections", "Requests refused before running, by reason "
            "(queue_full, draining, loading, invalid_argument, unauthenticated, ...).",
            ["reason"], registry=registry,
        )
        self._jobs = Gauge(
            "nanollm_training_jobs", "Training jobs under the jobs root, by state.",
            ["state"], registry=registry,
        )
        self._job_loss = Gauge(
            "nanollm_training_job_loss", "Latest logged training loss of each running job.",
            ["job"], registry=registry,
        )
        self._job_tokens = Gauge(
            "nanollm_training_job_tokens_per_second",
            "Latest logged training throughput of each running job (all ranks).",
            ["job"], registry=registry,
        )

    # Per RPC (servicers / interceptor).
    def request_done(self, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC. `method` is the full name (`/nanollm.v1.GenerateService/
        Generate`), `code` a grpc.StatusCode name (`OK`, `INVALID_ARGUMENT`, ...)."""
        self._requests.labels(method=method, code=code).inc()
        self._e2e.labels(method=method).observe(seconds)

    def rejected(self, reason: str) -> None:
        self._rejections.labels(reason=reason).inc()

    # Per request (engine thread).
    def queue_time(self, model: str, seconds: float) -> None:
        self._queue.labels(model=model).observe(seconds)

    def ttft(self, model: str, seconds: float) -> None:
        self._ttft.labels(model=model).observe(seconds)

    def inter_token(self, model: str, seconds: float) -> None:
        self._itl.labels(model=model).observe(seconds)

    def tokens(self, model: str, prompt: int, generated: int) -> None:
        if prompt:
            self._prompt_tokens.labels(model=model).inc(prompt)
        if generated:
            self._generation_tokens.labels(model=model).inc(generated)

    # Per decode step (engine thread).
    def batch_size(self, model: str, n: int) -> None:
        self._batch.labels(model=model).observe(n)

    def set_running(self, model: str, n: int) -> None:
        self._running.labels(model=model).set(n)

    def set_waiting(self, model: str, n: int) -> None:
        self._waiting.labels(model=model).set(n)

    def set_kv_usage(self, model: str, fraction: float) -> None:
        self._kv_usage.labels(model=model).set(fraction)

    def forget_model(self, model: str) -> None:
        """Drop an unloaded model's gauges, so dashboards do not show a stale running count.
        Its counters and histograms stay: Prometheus' rate() needs them to end cleanly."""
        for gauge in (self._running, self._waiting, self._kv_usage):
            with contextlib.suppress(KeyError):
                gauge.remove(model)

    # Training jobs (the job supervisor thread).
    def set_jobs_by_state(self, counts: Mapping[str, int]) -> None:
        """Jobs per state name (QUEUED, RUNNING, SUCCEEDED, ...); give every state."""
        for state, n in counts.items():
            self._jobs.labels(state=state).set(n)

    def set_job_progress(self, job_id: str, loss: float, tokens_per_second: float) -> None:
        self._job_loss.labels(job=job_id).set(loss)
        self._job_tokens.labels(job=job_id).set(tokens_per_second)

    def forget_job(self, job_id: str) -> None:
        """Drop a job's gauges once it no longer runs."""
        for gauge in (self._job_loss, self._job_tokens):
            with contextlib.suppress(KeyError):
                gauge.remove(job_id)

    # The /metrics endpoint.
    def start_http(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0 = any free port) in a daemon thread; return the port."""
        if self._http is not None:
            raise RuntimeError("the metrics endpoint is already running")
        self._http, self._http_thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_address[1])

    def stop_http(self) -> None:
        """Stop serving /metrics (no-op when not started)."""
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
        self._http = self._http_thread = None
