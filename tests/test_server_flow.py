"""Flow control of a real server: cancellation, deadlines (queued and running), a full queue.

The server has 2 batch slots and room for 2 waiting requests, so a test fills it with one
request of n=2. What a client cannot see (how many tokens were generated after a cancel, when a
slot was freed) is read from the engine's counters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from server_harness import (
    ServerThread,
    greedy,
    retry_delay,
    rpc_error,
    server_config,
    stream_request,
    tiny_byte_checkpoint,
    wait_for,
)

from server.errors import CancelledError, DeadlineExceededError
from server.handle import RequestHandle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG = 4000  # tokens: far more than any test waits for (the window slides past block_size)
GENERATE = "/nanollm.v1.GenerateService/Generate"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    config = server_config(tiny_byte_checkpoint(root / "tiny"), root, max_batch_size=2,
                           max_queue=2, max_tokens_limit=LONG)
    with ServerThread(config) as server:
        yield server


@pytest.fixture(autouse=True)
def idle_after(srv: ServerThread) -> Iterator[None]:
    yield
    wait_for(lambda: srv.engine().num_running == 0 and srv.engine().num_waiting == 0, 10,
             "the engine to be idle after the test")


def finished(srv: ServerThread, request_id: str) -> RequestHandle:
    wait_for(lambda: any(h.request.request_id == request_id for h in srv.engine().recent), 5,
             f"request {request_id} to finish")
    (handle,) = [h for h in srv.engine().recent if h.request.request_id == request_id]
    return handle


def count(srv: ServerThread, name: str, labels: dict[str, str]) -> float:
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


def blocker(srv: ServerThread, request_id: str) -> grpc.Future:
    """A stream holding both batch slots (n=2) until cancelled."""
    req = stream_request("blocker", LONG, n=2)
    req.request_id = request_id
    call = srv.generate.StreamGenerate(req)
    next(call)  # it is running
    return call


def test_a_cancelled_stream_frees_its_slot_within_two_decode_steps(srv: ServerThread) -> None:
    before = srv.generate.Generate(greedy("after", 12)).choices[0].token_ids
    req = stream_request("ROMEO:", LONG)
    req.request_id = "cancel-me"
    call = srv.generate.StreamGenerate(req)
    received = [m for _, m in zip(range(5), call, strict=False)]
    assert sum(len(m.token_ids) for m in received) == 5
    call.cancel()

    handle = finished(srv, "cancel-me")
    assert isinstance(handle.error, CancelledError)
    assert handle.cancel_step is not None and handle.release_step is not None
    assert handle.release_step - handle.cancel_step <= 2
    assert handle.generated - handle.tokens_at_cancel <= 1  # at most the step in progress
    assert handle.generated < 100
    # the freed slot serves the next request as if nothing had been there
    assert srv.generate.Generate(greedy("after", 12)).choices[0].token_ids == before


def test_a_deadline_stops_a_running_request(srv: ServerThread) -> None:
    codes_before = count(srv, "nanollm_requests_total", {"method": GENERATE,
                                                         "code": "DEADLINE_EXCEEDED"})
    req = greedy("x", LONG)
    req.request_id = "late-running"
    err = rpc_error(lambda: srv.generate.Generate(req, timeout=0.3))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    handle = finished(srv, "late-running")
    assert handle.admitted_at is not None and 0 < handle.generated < LONG
    assert isinstance(handle.error, DeadlineExceededError | CancelledError)
    assert handle.release_step - handle.cancel_step <= 2  # type: ignore[operator]
    wait_for(lambda: count(srv, "nanollm_requests_total",
                           {"method": GENERATE, "code": "DEADLINE_EXCEEDED"}) == codes_before + 1,
             5, "the server to count the call as DEADLINE_EXCEEDED")


@pytest.mark.parametrize("rpc", ["Generate", "StreamGenerate"])
def test_a_deadline_drops_a_queued_request(srv: ServerThread, rpc: str) -> None:
    running = blocker(srv, f"blocker-{rpc}")
    req = greedy("queued", 8) if rpc == "Generate" else stream_request("queued", 8)
    req.request_id = f"late-queued-{rpc}"
    call = getattr(srv.generate, rpc)
    err = rpc_error(lambda: list(call(req, timeout=0.3)) if rpc == "StreamGenerate"
                    else call(req, timeout=0.3))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    handle = finished(srv, f"late-queued-{rpc}")
    assert handle.admitted_at is None and handle.generated == 0
    assert srv.engine().num_waiting == 0 and srv.engine().num_running == 1  # blocker goes on
    running.cancel()


def test_a_full_queue_answers_resource_exhausted_with_retry_info(srv: ServerThread) -> None:
    rejected_before = count(srv, "nanollm_rejections_total", {"reason": "queue_full"})
    running = blocker(srv, "blocker-queue")
    waiting = [srv.generate.StreamGenerate(stream_request(f"wait {i}", 4)) for i in range(2)]
    consumers = [threading.Thread(target=lambda c=c: list(c)) for c in waiting]
    for t in consumers:
        t.start()
    wait_for(lambda: srv.engine().num_waiting == 2, 5, "two queued requests")

    err = rpc_error(lambda: srv.generate.Generate(greedy("one too many", 4)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == ("model 'gpt' has 2 requests waiting (the queue is full); retry "
                             "later")
    delay = retry_delay(err)
    assert delay is not None and 0.1 <= delay <= 30
    assert count(srv, "nanollm_rejections_total", {"reason": "queue_full"}) == rejected_before + 1

    running.cancel()  # the queued requests now run to the end
    for t in consumers:
        t.join(10)
    assert all(c.code() == grpc.StatusCode.OK for c in waiting)
