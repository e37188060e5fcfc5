"""nanoLLM's trainer: single process, DDP or FSDP (via torchrun), with exact resume.

    from trainer import train
    result = train(TrainingConfig(data_path="input.txt", max_iters=1000))

Command line: `gpt-train --help` (trainer/cli.py). Guide: docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TrainResult", "TrainingError", "train"]

if TYPE_CHECKING:
    from trainer.loop import TrainingError, TrainResult, train


def __getattr__(name: str) -> Any:
    # Lazy, so `trainer.cli --help` and config checks do not wait for torch to import.
    if name in __all__:
        from trainer import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
