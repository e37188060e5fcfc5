"""What an engine sends back for a request: a list of events per decode step.

    TokenEvent   one choice's output of one step: its token, the text now safe to stream, and on
                 the choice's last event its finish reason and Completion
    DoneEvent    the request's last event: every choice has ended; timings, and the error when
                 the server (not the model) ended it

The servicers turn them into protobuf messages; nothing here knows about gRPC or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from nanollm.sequence import Completion
from server.errors import ServerError


@dataclass
class TokenEvent:
    """One row's output of one step. token is None for a row that ended without sampling
    (cancelled); `completion` is set on the last event of a choice."""

    index: int  # which choice, 0 to n - 1
    token: int | None
    logprob: float | None
    text: str  # text now safe to stream (maybe "")
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the choice's last event
    completion: Completion | None = None
    top: list[tuple[int, float]] | None = None  # the most likely alternatives, when asked


@dataclass
class Timings:
    queue_ms: float
    prefill_ms: float
    decode_ms: float
    total_ms: float


@dataclass
class DoneEvent:
    """The request's last event: every choice has ended. `error` is set when the server (not
    the model) ended it: deadline, unload, shutdown, an engine fault."""

    timings: Timings
    error: ServerError | None = None


Event = TokenEvent | DoneEvent
