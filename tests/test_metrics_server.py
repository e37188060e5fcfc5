"""A real server's /metrics endpoint after known traffic: exact request and token counts."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import ServerThread, server_config, tiny_byte_checkpoint, wait_for

from nanollm.client import Client, InvalidArgumentError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SERVICE = "/nanollm.v1.GenerateService/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerThread]:
    config = server_config(tiny_byte_checkpoint(tmp_path / "tiny"), tmp_path, metrics_port=0)
    with ServerThread(config) as server:
        yield server


def test_metrics_count_exactly_the_requests_sent(srv: ServerThread) -> None:
    port = srv.server.metrics_port
    assert port is not None and port > 0
    before = scrape(port)  # the warm-up generation at load time is already in there

    def delta(name: str, **labels: str) -> float:
        k = key(name, **labels)
        return scrape(port).get(k, 0.0) - before.get(k, 0.0)

    prompts = ["ROMEO:", "JULIET:", "To be"]  # byte tokenizer: 6 + 7 + 5 prompt tokens
    with Client(srv.target, timeout=30) as client:
        for prompt in prompts:
            client.generate(prompt, max_tokens=8, stop_at_eos=False)
        streamed = list(client.stream("Hi", max_tokens=5, n=2, stop_at_eos=False))
        with pytest.raises(InvalidArgumentError):
            client.generate("", max_tokens=0)
        client.tokenize("abc")
    assert streamed[-1].usage.completion_tokens == 10

    # The interceptor counts a call once its status is sent, which can trail the client a bit.
    wait_for(lambda: delta("nanollm_requests_total", method=SERVICE + "Tokenize", code="OK")
             == 1, 5, "the last call to be counted")
    assert delta("nanollm_requests_total", method=SERVICE + "Generate", code="OK") == 3
    assert delta("nanollm_requests_total", method=SERVICE + "Generate",
                 code="INVALID_ARGUMENT") == 1
    assert delta("nanollm_requests_total", method=SERVICE + "StreamGenerate", code="OK") == 1
    assert delta("nanollm_e2e_request_latency_seconds_count", method=SERVICE + "Generate") == 4
    assert delta("nanollm_rejections_total", reason="invalid_argument") == 1
    # Prompt tokens count once per request (n=2 included); generated ones over all choices.
    assert delta("nanollm_prompt_tokens_total", model="gpt") == 6 + 7 + 5 + 2
    assert delta("nanollm_generation_tokens_total", model="gpt") == 3 * 8 + 2 * 5
    assert delta("nanollm_time_to_first_token_seconds_count", model="gpt") == 4
    assert delta("nanollm_queue_time_seconds_count", model="gpt") == 4
    # 7 gaps per 8-token choice, 4 per 5-token choice.
    assert delta("nanollm_inter_token_latency_seconds_count", model="gpt") == 3 * 7 + 2 * 4
    after = scrape(port)
    assert after[key("nanollm_requests_running", model="gpt")] == 0
    assert after[key("nanollm_requests_waiting", model="gpt")] == 0
    assert after[key("nanollm_batch_size_count", model="gpt")] > 0
