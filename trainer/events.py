"""The structured event log of a run: `<out_dir>/events.jsonl`, one JSON object per line.

Every line has `type` ("start" | "step" | "eval" | "checkpoint" | "end" | "error"), `time` (Unix
seconds) and `step` (optimizer steps completed), plus fields of its type (docs/training.md lists
them). Each line is flushed as it is written, so a reader can tail the file while the run goes on;
a resumed run appends to the same file. Non-finite floats are written as null (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO, Any

EVENT_TYPES = ("start", "step", "eval", "checkpoint", "end", "error")
EVENTS_FILE = "events.jsonl"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class EventLog:
    """Appends events to a JSON-lines file; `EventLog(None)` is a sink for non-zero ranks."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def emit(self, type: str, step: int, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; one of {EVENT_TYPES}")
        event = {"type": type, "time": round(time.time(), 3), "step": step, **fields}
        if self._file is not None:
            self._file.write(json.dumps(_finite(event), allow_nan=False) + "\n")
            self._file.flush()
        return event

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All events of a run folder (or an events.jsonl path); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
