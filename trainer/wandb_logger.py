"""Optional Weights & Biases logging (`wandb_log: true`); wandb is imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from nanollm.config import ConfigError, TrainingConfig


class WandbLogger:
    """Mirrors step and eval metrics to a W&B run; a no-op when disabled."""

    def __init__(self, cfg: TrainingConfig, *, enabled: bool) -> None:
        self._run: Any = None
        if not (enabled and cfg.wandb_log):
            return
        try:
            wandb = importlib.import_module("wandb")
        except ImportError as exc:
            raise ConfigError("wandb_log is set but wandb is not installed: pip install wandb "
                              "(or pip install 'nanollm-gpt[wandb]')") from exc
        self._run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name,
                               config=cfg.to_dict())

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is not None:
            self._run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
