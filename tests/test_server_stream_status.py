"""A stream that ends because its client went away (deadline, cancel) is logged and counted with
that status, never as OK, whichever way grpc closes the servicer's generator (a cancelled task,
or the generator closed at its `yield`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest
from server_harness import (
    GRPCURL,
    ServerThread,
    server_config,
    stream_request,
    tiny_byte_checkpoint,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STREAM = "/nanollm.v1.GenerateService/StreamGenerate"
LONG = 50_000  # tokens: far more than the deadline lets through
TRIES = 10  # the generator was closed at its yield in about one stream in four


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    with ServerThread(server_config(tiny_byte_checkpoint(root / "tiny"), root,
                                    max_tokens_limit=LONG)) as server:
        yield server


def codes(srv: ServerThread) -> dict[str, float]:
    registry = srv.server.metrics.registry
    return {code: registry.get_sample_value("nanollm_requests_total",
                                            {"method": STREAM, "code": code}) or 0.0
            for code in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")}


def test_streams_past_their_deadline_are_counted_as_deadline_exceeded(srv: ServerThread
                                                                       ) -> None:
    before = codes(srv)
    body = f'{{"prompt": "a", "sampling": {{"max_tokens": {LONG}, "stop_at_eos": false}}}}'
    for _ in range(TRIES):
        done = subprocess.run([GRPCURL, "-plaintext", "-max-time", "0.3", "-d", body,
                               srv.target, "nanollm.v1.GenerateService/StreamGenerate"],
                              capture_output=True, text=True, timeout=30)
        assert "Code: DeadlineExceeded" in done.stderr
    wait_for(lambda: sum(codes(srv).values()) == sum(before.values()) + TRIES, 5,
             "every stream to be counted")
    after = codes(srv)
    assert after["OK"] == before["OK"]
    assert after["DEADLINE_EXCEEDED"] == before["DEADLINE_EXCEEDED"] + TRIES


def test_cancelled_streams_are_counted_as_cancelled(srv: ServerThread) -> None:
    before = codes(srv)
    for _ in range(TRIES):
        call = srv.generate.StreamGenerate(stream_request("a", LONG))
        for _, _message in zip(range(20), call, strict=False):
            pass
        call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED
    wait_for(lambda: sum(codes(srv).values()) == sum(before.values()) + TRIES, 5,
             "every stream to be counted")
    after = codes(srv)
    assert after["OK"] == before["OK"]
    assert after["CANCELLED"] == before["CANCELLED"] + TRIES
