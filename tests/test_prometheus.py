"""The real Prometheus server scrapes a real nanoLLM server under a little load; TTFT p50 and the
request rate come back through PromQL, and the shipped recording rules evaluate.

Needs the Debian `prometheus` package (`make test-deps`). Without it the test is skipped on a
developer machine and fails in CI (the CI variable is set), where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import ServerThread, server_config, tiny_byte_checkpoint

from nanollm.client import Client

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "docs" / "prometheus" / "nanollm-rules.yml"
GENERATE = "/nanollm.v1.GenerateService/Generate"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"{tool} is not installed: run `make test-deps` (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_shipped_rules_and_config_pass_promtool() -> None:
    promtool = need("promtool")
    for what, path in (("rules", RULES), ("config", RULES.parent / "prometheus.yml")):
        done = subprocess.run([promtool, "check", what, str(path)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 15 rules found" in done.stdout


class Prometheus:
    """`prometheus` on loopback with a temp TSDB, scraping one target every second."""

    def __init__(self, folder: Path, target: str) -> None:
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(RULES))}]\n"
            "scrape_configs:\n"
            f"  - {{job_name: nanollm, static_configs: [{{targets: [{json.dumps(target)}]}}]}}\n")
        self.log = (folder / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [need("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={folder / 'db'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> list[dict]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str, at_least: float = float("-inf"), timeout: float = 40.0
              ) -> float:
        """The single value of an instant query, once Prometheus has one (>= at_least)."""
        end = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "prometheus exited; see prometheus.log"
            try:
                result = self.query(promql)
            except OSError:  # not listening yet
                result = []
            if result:
                (sample,) = result
                value = float(sample["value"][1])
                if value == value and value >= at_least:  # NaN: no samples in the window
                    return value
            if time.monotonic() > end:
                raise AssertionError(f"no value for {promql!r} after {timeout} s")
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerThread]:
    config = server_config(tiny_byte_checkpoint(tmp_path / "tiny"), tmp_path, metrics_port=0)
    with ServerThread(config) as server:
        yield server


def test_prometheus_reads_ttft_and_request_rate_through_promql(srv: ServerThread,
                                                              tmp_path: Path) -> None:
    need("prometheus")
    prom = Prometheus(tmp_path, f"127.0.0.1:{srv.server.metrics_port}")
    stop = threading.Event()
    ttfts: list[float] = []  # as the client saw them
    generated_at: list[float] = []  # when each Generate call returned

    def load() -> None:
        """A short stream and a Generate every 0.2 s."""
        with Client(srv.target, timeout=30) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                first = None
                for _ in client.stream("ROMEO:", max_tokens=4, stop_at_eos=False):
                    first = first or time.perf_counter() - t0
                ttfts.append(first or 0.0)
                client.generate("JULIET:", max_tokens=4)
                generated_at.append(time.monotonic())
                stop.wait(max(0.0, 0.2 - (time.perf_counter() - t0)))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        assert prom.value('up{job="nanollm"}') == 1
        # rate() over 10 s underestimates while the series is younger than that: wait until
        # Prometheus holds 12 scrapes of it.
        generate_ok = f'nanollm_requests_total{{method="{GENERATE}",code="OK"}}'
        prom.value(f"count_over_time({generate_ok}[15s])", at_least=12)
        rate = prom.value(f"sum(rate({generate_ok}[10s]))")
        now = time.monotonic()
        client_rate = sum(1 for t in generated_at if t > now - 10) / 10
        p50 = prom.value("histogram_quantile(0.5, sum by (le) "
                         "(rate(nanollm_time_to_first_token_seconds_bucket[10s])))")
        recorded_p50 = prom.value('model:nanollm_time_to_first_token_seconds:p50_5m'
                                  '{model="gpt"}')
        recorded_rate = prom.value(f'method:nanollm_requests:rate1m{{method="{GENERATE}"}}')
    finally:
        stop.set()
        worker.join(30)
        prom.stop()
    # About 5 per second (one per 0.2 s loop), as the client counted them over the same 10 s
    # (give or take a scrape interval).
    assert 0.7 * client_rate <= rate <= 1.4 * client_rate, (rate, client_rate)
    assert 0 < recorded_rate <= 1.4 * client_rate, recorded_rate  # the 1m window is not full
    # The server's TTFT (arrival to first token) is at most what the client saw, and the
    # quantile interpolates within a bucket: it lies between 0 and the bucket above.
    slowest = max(ttfts)
    assert 0 < p50 <= max(0.0025, 2 * slowest), (p50, slowest)
    assert 0 < recorded_p50 <= max(0.0025, 2 * slowest), (recorded_p50, slowest)
