"""ServerMetrics: what each hook exports on /metrics, read back over HTTP as Prometheus would."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ServerMetrics

GENERATE = "/nanollm.v1.GenerateService/Generate"


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of /metrics as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def served() -> Iterator[tuple[ServerMetrics, int]]:
    metrics = ServerMetrics()
    port = metrics.start_http("127.0.0.1", 0)
    yield metrics, port
    metrics.stop_http()


def test_every_hook_shows_on_the_endpoint(served: tuple[ServerMetrics, int]) -> None:
    metrics, port = served
    metrics.request_done(GENERATE, "OK", 0.3)
    metrics.request_done(GENERATE, "OK", 0.7)
    metrics.request_done(GENERATE, "INVALID_ARGUMENT", 0.001)
    metrics.queue_time("m", 0.002)
    metrics.ttft("m", 0.05)
    metrics.inter_token("m", 0.02)
    metrics.inter_token("m", 0.03)
    metrics.batch_size("m", 3)
    metrics.tokens("m", prompt=7, generated=12)
    metrics.tokens("m", prompt=1, generated=0)
    metrics.set_running("m", 2)
    metrics.set_waiting("m", 5)
    metrics.set_kv_usage("m", 0.25)
    metrics.rejected("queue_full")

    got = scrape(port)
    assert got[key("nanollm_requests_total", method=GENERATE, code="OK")] == 2
    assert got[key("nanollm_requests_total", method=GENERATE, code="INVALID_ARGUMENT")] == 1
    assert got[key("nanollm_e2e_request_latency_seconds_count", method=GENERATE)] == 3
    assert got[key("nanollm_e2e_request_latency_seconds_sum", method=GENERATE)] == pytest.approx(
        1.001)
    # Cumulative buckets: 0.001 falls in le=0.005, 0.3 in le=0.5, 0.7 in le=1.0.
    for le, count in (("0.005", 1), ("0.5", 2), ("1.0", 3)):
        assert got[key("nanollm_e2e_request_latency_seconds_bucket", method=GENERATE,
                       le=le)] == count
    assert got[key("nanollm_queue_time_seconds_count", model="m")] == 1
    assert got[key("nanollm_time_to_first_token_seconds_sum", model="m")] == pytest.approx(0.05)
    assert got[key("nanollm_inter_token_latency_seconds_count", model="m")] == 2
    assert got[key("nanollm_batch_size_bucket", model="m", le="4.0")] == 1
    assert got[key("nanollm_batch_size_bucket", model="m", le="2.0")] == 0
    assert got[key("nanollm_prompt_tokens_total", model="m")] == 8
    assert got[key("nanollm_generation_tokens_total", model="m")] == 12
    assert got[key("nanollm_requests_running", model="m")] == 2
    assert got[key("nanollm_requests_waiting", model="m")] == 5
    assert got[key("nanollm_kv_cache_usage_ratio", model="m")] == 0.25
    assert got[key("nanollm_rejections_total", reason="queue_full")] == 1
    # The process collector comes with a private registry (CPU, memory of the server).
    assert key("process_cpu_seconds_total") in got


def test_forget_model_drops_its_gauges_only(served: tuple[ServerMetrics, int]) -> None:
    metrics, port = served
    for model in ("a", "b"):
        metrics.set_running(model, 1)
        metrics.tokens(model, prompt=2, generated=3)
    metrics.forget_model("a")
    metrics.forget_model("never-loaded")  # no error
    got = scrape(port)
    assert key("nanollm_requests_running", model="a") not in got
    assert got[key("nanollm_requests_running", model="b")] == 1
    assert got[key("nanollm_generation_tokens_total", model="a")] == 3


def test_two_servers_in_one_process_do_not_share_counters() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    p1, p2 = first.start_http("127.0.0.1", 0), second.start_http("127.0.0.1", 0)
    try:
        assert p1 != p2 and p1 > 0
        first.request_done(GENERATE, "OK", 0.1)
        ok = key("nanollm_requests_total", method=GENERATE, code="OK")
        assert scrape(p1)[ok] == 1
        assert ok not in scrape(p2)
    finally:
        first.stop_http()
        second.stop_http()


def test_start_twice_is_refused_and_stop_frees_the_port() -> None:
    metrics = ServerMetrics()
    port = metrics.start_http("127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="already running"):
        metrics.start_http("127.0.0.1", 0)
    metrics.stop_http()
    metrics.stop_http()  # idempotent
    assert metrics.start_http("127.0.0.1", port) == port  # the port was released
    metrics.stop_http()
