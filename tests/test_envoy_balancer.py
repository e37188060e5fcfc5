"""The real Envoy with gateway/envoy/balancer.yaml in front of two real gpt-server replicas:
both serve traffic; one is killed and requests keep succeeding on the other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy_harness import ANY_PORT, ENVOY, Envoy, GptServer
from server_harness import greedy, stream_request, tiny_byte_checkpoint, wait_for

from gateway.envoy.render import balancer_config
from nanollm.v1 import generate_pb2, generate_pb2_grpc

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy is not installed: make install")

HEALTH_INTERVAL = 0.2  # seconds; the template's 2 s would only slow the test down


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[GptServer, GptServer]]:
    checkpoint = tiny_byte_checkpoint(tmp_path / "models" / "tiny")
    # Started together: each spends seconds importing torch and loading the model.
    a, b = GptServer(checkpoint, tmp_path / "a"), GptServer(checkpoint, tmp_path / "b")
    try:
        yield a.wait_ready(), b.wait_ready()
    finally:
        a.close()
        b.close()


def test_both_replicas_serve_and_requests_survive_killing_one(
        replicas: tuple[GptServer, GptServer], tmp_path: Path) -> None:
    a, b = replicas
    config = balancer_config([a.address, b.address], ANY_PORT, ANY_PORT, HEALTH_INTERVAL)
    hosts = (f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}")
    with Envoy(config, tmp_path / "envoy", "balancer") as envoy, \
            grpc.insecure_channel(envoy.target) as channel:
        wait_for(lambda: envoy.host_health() == dict.fromkeys(hosts, "healthy"), 20,
                 "both replicas to pass Envoy's gRPC health check")
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        expected = list(stub.Generate(greedy("ROMEO:", 8), timeout=30).choices[0].token_ids)

        def generate_ok() -> None:
            reply = stub.Generate(greedy("ROMEO:", 8), timeout=30)
            assert list(reply.choices[0].token_ids) == expected

        for _ in range(9):
            generate_ok()
        # Round robin over two healthy replicas: five requests each.
        wait_for(lambda: (a.requests_served(), b.requests_served()) == (5, 5), 5,
                 "each replica to log five requests")
        streamed = list(stub.StreamGenerate(stream_request("ROMEO:", 8), timeout=30))
        assert [i for m in streamed for i in m.token_ids] == expected
        assert streamed[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH

        a.proc.kill()  # no drain: the replica vanishes with its connections
        a.proc.wait(10)
        for _ in range(10):  # at once: retries move requests that hit the dead replica
            generate_ok()
        wait_for(lambda: envoy.host_health()[hosts[0]] != "healthy", 10,
                 "Envoy's health check to mark the killed replica")
        for _ in range(10):
            generate_ok()
        wait_for(lambda: (a.requests_served(), b.requests_served()) == (5, 5 + 20), 5,
                 "the other replica to log the twenty requests")
        assert envoy.host_health()[hosts[1]] == "healthy"
