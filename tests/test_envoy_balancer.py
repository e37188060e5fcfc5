"""The real Envoy with gateway/envoy/balancer.yaml in front of two real gpt-server replicas:
both serve traffic; one is killed and requests keep succeeding on the other. A transcoder Envoy
chained in front of the balancer (the pod of docs/kubernetes/envoy.yaml) serves JSON all along."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy_harness import ANY_PORT, Envoy, GptServer, descriptor_set, need_envoy
from server_harness import greedy, rpc_error, stream_request, tiny_byte_checkpoint, wait_for

from gateway.envoy.render import Address, balancer_config, transcoder_config
from nanollm.v1 import generate_pb2, generate_pb2_grpc, model_admin_pb2, model_admin_pb2_grpc

HEALTH_INTERVAL = 0.2  # seconds; the template's 2 s would only slow the test down
PER_REPLICA = ("models are loaded and training jobs run per replica: call LoadModel, "
               "UnloadModel, SetDefaultModel and TrainService on each replica's own address")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[GptServer, GptServer]]:
    need_envoy()
    checkpoint = tiny_byte_checkpoint(tmp_path / "models" / "tiny")
    # Started together: each spends seconds importing torch and loading the model.
    a, b = GptServer(checkpoint, tmp_path / "a"), GptServer(checkpoint, tmp_path / "b")
    try:
        yield a.wait_ready(), b.wait_ready()
    finally:
        a.close()
        b.close()


def json_generate(transcoder: Envoy) -> list[int]:
    request = urllib.request.Request(
        transcoder.url + "/v1/generate", headers={"content-type": "application/json"},
        data=json.dumps({"prompt": "ROMEO:", "sampling": {
            "max_tokens": 8, "temperature": 0, "stop_at_eos": False}}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["choices"][0]["token_ids"]


def test_both_replicas_serve_and_requests_survive_killing_one(
        replicas: tuple[GptServer, GptServer], tmp_path: Path) -> None:
    a, b = replicas
    config = balancer_config([a.address, b.address], ANY_PORT, ANY_PORT, HEALTH_INTERVAL)
    hosts = (f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}")
    with Envoy(config, tmp_path / "balancer", "balancer") as balancer, \
            grpc.insecure_channel(balancer.target) as channel:
        wait_for(lambda: balancer.host_health() == dict.fromkeys(hosts, "healthy"), 20,
                 "both replicas to pass Envoy's gRPC health check")
        stub = generate_pb2_grpc.GenerateServiceStub(channel)
        expected = list(stub.Generate(greedy("ROMEO:", 8), timeout=30).choices[0].token_ids)

        def generate_ok() -> None:
            reply = stub.Generate(greedy("ROMEO:", 8), timeout=30)
            assert list(reply.choices[0].token_ids) == expected

        for _ in range(9):
            generate_ok()

        def served() -> tuple[int, int]:
            return a.requests_served(), b.requests_served()

        wait_for(lambda: sum(served()) == 10, 5, "the replicas to log ten requests")
        # Round robin: five each (four, if a worker saw one replica healthy a moment late).
        assert min(served()) >= 4, served()
        streamed = list(stub.StreamGenerate(stream_request("ROMEO:", 8), timeout=30))
        assert [i for m in streamed for i in m.token_ids] == expected
        assert streamed[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH
        # The model list is balanced; a model loaded through the balancer would exist on one
        # replica only.
        admin = model_admin_pb2_grpc.ModelAdminServiceStub(channel)
        assert admin.ListModels(model_admin_pb2.ListModelsRequest(), timeout=5).default_model \
            == "gpt"
        err = rpc_error(lambda: admin.SetDefaultModel(
            model_admin_pb2.SetDefaultModelRequest(name="gpt"), timeout=5))
        assert (err.code(), err.details()) == (grpc.StatusCode.UNIMPLEMENTED, PER_REPLICA)

        rest = transcoder_config([Address("127.0.0.1", balancer.port)], ANY_PORT, ANY_PORT,
                                 descriptor_set(tmp_path / "proto" / "nanollm.pb"))
        with Envoy(rest, tmp_path / "transcoder", "transcoder") as transcoder:
            assert json_generate(transcoder) == expected
            wait_for(lambda: sum(served()) == 11, 5, "the replicas to log the JSON request")
            before = served()
            load = urllib.request.Request(transcoder.url + "/v1/admin/models", data=b"{}",
                                          headers={"content-type": "application/json"})
            try:
                urllib.request.urlopen(load, timeout=10)
            except urllib.error.HTTPError as refused:
                assert (refused.code, json.loads(refused.read())) == (
                    501, {"code": 12, "message": PER_REPLICA, "details": []})
            else:
                raise AssertionError("the balancer let a LoadModel through")

            a.proc.kill()  # no drain: the replica vanishes with its connections
            a.proc.wait(10)
            for _ in range(10):  # at once: retries move requests that hit the dead replica
                generate_ok()
            assert json_generate(transcoder) == expected
            wait_for(lambda: balancer.host_health()[hosts[0]] != "healthy", 10,
                     "Envoy's health check to mark the killed replica")
            for _ in range(10):
                generate_ok()
            wait_for(lambda: served() == (before[0], before[1] + 21), 5,
                     "the other replica to log every request sent after the kill")
            assert balancer.host_health()[hosts[1]] == "healthy"

        b.proc.kill()
        wait_for(lambda: balancer.host_health()[hosts[1]] != "healthy", 10,
                 "Envoy's health check to mark the second killed replica")

        def unavailable() -> str:
            err = rpc_error(lambda: stub.Generate(greedy("ROMEO:", 8), timeout=30))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            return err.details()

        # Envoy's workers see the health change a moment after its admin page does.
        wait_for(lambda: unavailable() == "no healthy upstream", 5,
                 "requests to fail at once with no replica left")
