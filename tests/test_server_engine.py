"""The engine's queue bound, checked on an engine whose thread has not started (so nothing is
admitted behind the test's back)."""

from __future__ import annotations

import asyncio

import pytest
from decoding_refs import BYTE, random_model
from prometheus_client import CollectorRegistry

from nanollm.config import GenerationConfig
from server.engine import Engine, EngineSettings
from server.errors import QueueFullError
from server.metrics import ServerMetrics
from server.validation import GenerationRequest


def request(i: int) -> GenerationRequest:
    return GenerationRequest(request_id=f"r{i}", model="gpt", prompt_ids=[104, 105],
                             config=GenerationConfig(temperature=0.0), max_tokens=4, n=1,
                             seed=0)


def test_a_burst_that_fits_the_free_slots_is_never_refused() -> None:
    """max_queue counts requests waiting for a slot: with 2 free slots and a queue of 1, three
    requests arriving at once are accepted (two take the slots, one waits); the fourth is
    refused."""
    engine = Engine("gpt", random_model(), BYTE, EngineSettings(max_batch_size=2, max_queue=1),
                    ServerMetrics(CollectorRegistry()))
    loop = asyncio.new_event_loop()
    try:
        for i in range(3):
            engine.submit(request(i), loop)
        with pytest.raises(QueueFullError, match="the queue is full"):
            engine.submit(request(3), loop)
    finally:
        loop.close()
