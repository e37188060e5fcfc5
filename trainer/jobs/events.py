"""Reading a job's files while its process writes them: events.jsonl and output.log.

    progress = JobProgress(job_dir)
    new = progress.refresh()            # events appended since the last call, in order
    progress.history.steps              # every logged step of the run that counts

gpt-train appends one JSON object per line to events.jsonl and flushes each line (trainer/
events.py lists the types). A reader keeps its own offset, so any number of readers follow one
file without affecting each other or the writer. Only complete lines are taken: a line being
written waits for its newline. A file that shrinks or is replaced (a job that starts over) is
read again from its start.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.events import EVENTS_FILE

MAX_LINE = 4000  # console lines are cut to this many characters
MAX_HISTORY = 20_000  # logged steps kept for a snapshot (the oldest are dropped beyond)


class FileTail:
    """Complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._inode: int | None = None
        self._partial = b""
        self.restarted = False  # set when a read found the file replaced and began anew

    def _reset_if_replaced(self, stat: os.stat_result) -> None:
        if stat.st_ino != self._inode or stat.st_size < self.offset:
            self.restarted = self._inode is not None
            self.offset, self._partial, self._inode = 0, b"", stat.st_ino

    def read(self) -> list[str]:
        """New complete lines (decoded, without line breaks); [] while the file is missing."""
        try:
            with open(self.path, "rb") as f:
                self._reset_if_replaced(os.fstat(f.fileno()))
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a final newline, else a line being written
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def last_lines(self, n: int) -> list[str]:
        """The last `n` complete lines, and move to the end: later reads give what follows."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                start = max(0, stat.st_size - 256 * n - 4096)
                f.seek(start)
                data = f.read(stat.st_size - start)
        except FileNotFoundError:
            return []
        self._inode = stat.st_ino
        end = data.rfind(b"\n") + 1  # after the last complete line
        self.offset = start + end
        self._partial = b""
        lines = data[:end].split(b"\n")[:-1]
        if start > 0 and lines:
            lines = lines[1:]  # the first may be the end of a longer line
        return [cut(line.decode("utf-8", "replace").rstrip("\r")) for line in lines[-n:]]


def cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + " [...]"


def parse_event(line: str) -> dict[str, Any] | None:
    """One events.jsonl line as a dict; None for a line that is not an event."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    if not isinstance(event.get("step"), int):
        return None
    return event


@dataclass
class JobHistory:
    """What the events of a job folder add up to. A run resumed at step S (a "start" event with
    `resumed`) continues the history from S: steps and evaluations after S that the previous
    run logged but never saved are dropped, so each step appears once. A run that starts over
    starts the history over."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> last event
    step: int = 0

    def add(self, event: dict[str, Any]) -> None:
        kind, step = event["type"], event["step"]
        if kind == "start":
            if event.get("resumed"):
                self.steps = [e for e in self.steps if e["step"] <= step]
                self.evals = [e for e in self.evals if e["step"] <= step]
            else:
                self.steps, self.evals, self.checkpoints = [], [], {}
            self.start, self.end, self.error, self.step = event, None, None, step
        elif kind == "step":
            self.steps.append(event)
            del self.steps[:-MAX_HISTORY]
        elif kind == "eval":
            self.evals.append(event)
        elif kind == "checkpoint":
            self.checkpoints[str(event.get("kind", ""))] = event
        elif kind == "end":
            self.end = event
        elif kind == "error":
            self.error = event
        self.step = max(self.step, step) if kind != "start" else step

    @property
    def best_val_loss(self) -> float | None:
        values = [e["val_loss"] for e in self.evals if _finite(e.get("val_loss"))]
        return min(values) if values else None

    @property
    def max_iters(self) -> int | None:
        value = (self.start or {}).get("max_iters")
        return value if isinstance(value, int) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class JobProgress:
    """A job's events.jsonl followed from its start: `history` and the new events."""

    def __init__(self, job_dir: Path) -> None:
        self.tail = FileTail(job_dir / EVENTS_FILE)
        self.history = JobHistory()

    def refresh(self) -> list[dict[str, Any]]:
        lines = self.tail.read()
        if self.tail.restarted:  # the file was replaced: its history is what it holds now
            self.history, self.tail.restarted = JobHistory(), False
        events = [e for e in map(parse_event, lines) if e is not None]
        for event in events:
            self.history.add(event)
        return events
