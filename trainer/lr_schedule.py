"""Learning rate per optimizer step: linear warmup, then cosine decay down to `min_lr`.

The same rule as nanoGPT's `get_lr`, so its configs carry over unchanged:

    step < warmup_iters     lr = learning_rate * (step + 1) / (warmup_iters + 1)
    step >= lr_decay_iters  lr = min_lr
    otherwise               ratio = (step - warmup_iters) / (lr_decay_iters - warmup_iters)
                            lr = min_lr + 0.5 * (1 + cos(pi * ratio)) * (learning_rate - min_lr)

`lr_decay_iters` defaults to `max_iters` and `min_lr` to `learning_rate / 10`; with `decay_lr` off
the rate is `learning_rate` always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nanollm.config import TrainingConfig


@dataclass(frozen=True)
class LRSchedule:
    learning_rate: float
    min_lr: float
    warmup_iters: int
    lr_decay_iters: int
    decay_lr: bool = True

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> LRSchedule:
        decay_iters = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
        return cls(cfg.learning_rate, cfg.final_lr, cfg.warmup_iters, decay_iters, cfg.decay_lr)

    def __call__(self, step: int) -> float:
        """The rate used for optimizer step `step` (0-based)."""
        if not self.decay_lr:
            return self.learning_rate
        if step < self.warmup_iters:
            return self.learning_rate * (step + 1) / (self.warmup_iters + 1)
        # `>=` (nanoGPT: `>`) gives the same value at the boundary and avoids 0/0 when the decay
        # ends where the warmup ends.
        if step >= self.lr_decay_iters:
            return self.min_lr
        ratio = (step - self.warmup_iters) / (self.lr_decay_iters - self.warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
        return self.min_lr + coeff * (self.learning_rate - self.min_lr)
