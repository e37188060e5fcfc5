"""Training and evaluation batches: random windows of block_size + 1 tokens from a token array.

Training. Each optimizer step uses one *global batch* of `batch_size * gradient_accumulation_steps`
windows, drawn from a torch.Generator that every rank seeds alike. The global batch is cut into
`gradient_accumulation_steps` micro-batches of `batch_size`; rank r trains on micro-batches
r * k .. r * k + k - 1 where k = gradient_accumulation_steps / world_size. So one process with
accumulation 2 and two processes with accumulation 1 see the same sequences per step, ranks never
share a window, and the generator's state (saved in checkpoints) is the exact data position.

Evaluation uses its own generator, re-seeded at every evaluation: the same `eval_iters` batches
each time (losses comparable across evaluations) and the training stream is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from nanollm.dataset import DataError

# Offset added to the run seed for the evaluation generator, so it never equals the training one.
EVAL_SEED_OFFSET = 9_999_991


def _windows(data: np.ndarray, starts: torch.Tensor, block_size: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows at `starts` (B,) -> inputs x and next-token targets y, both (B, T) int64."""
    rows = np.stack([data[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)
    xy = torch.from_numpy(rows)  # (B, T + 1)
    if device.type == "cuda":
        xy = xy.pin_memory().to(device, non_blocking=True)
    return xy[:, :-1], xy[:, 1:]


def check_length(data: np.ndarray, block_size: int, split: str) -> None:
    """DataError (a user's input, reported in one line) when a split is shorter than a window."""
    if len(data) < block_size + 1:
        raise DataError(f"the {split} split has {len(data)} tokens, fewer than block_size + 1 = "
                        f"{block_size + 1}; use a smaller block_size or more data")


class BatchSampler:
    """This rank's micro-batches for each optimizer step (see the module docstring)."""

    def __init__(self, data: np.ndarray, *, block_size: int, batch_size: int,
                 accumulation_steps: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 device: torch.device | None = None) -> None:
        check_length(data, block_size, "train")
        if accumulation_steps % world_size:
            raise ValueError(f"gradient_accumulation_steps ({accumulation_steps}) must be "
                             f"divisible by the number of ranks ({world_size})")
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.accumulation_steps = accumulation_steps  # global
        self.local_steps = accumulation_steps // world_size
        self.rank = rank
        self.device = device or torch.device("cpu")
        self.generator = torch.Generator().manual_seed(seed)  # same seed on every rank
        self.steps_drawn = 0

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches [(x, y)] for the next optimizer step; x, y: (B, T)."""
        n_windows = self.batch_size * self.accumulation_steps
        high = len(self.data) - self.block_size  # last start leaves room for the target token
        starts = torch.randint(high, (n_windows,), generator=self.generator)
        starts = starts.view(self.accumulation_steps, self.batch_size)
        mine = starts[self.rank * self.local_steps : (self.rank + 1) * self.local_steps]
        self.steps_drawn += 1
        return [_windows(self.data, row, self.block_size, self.device) for row in mine]

    def state_dict(self) -> dict[str, object]:
        return {"generator": self.generator.get_state(), "steps_drawn": self.steps_drawn}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.steps_drawn = int(state["steps_drawn"])  # type: ignore[call-overload]


class EvalBatches:
    """The fixed evaluation batches of one split; rank r takes batches r, r + W, r + 2W, ..."""


    def __init__(self, data: np.ndarray, *, block_size: int, batch_size: int, eval_iters: int,
                 split: str, rank: int = 0, world_size: int = 1, seed: int = 0,
                 device: torch.device | None = None) -> None:
        check_length(data, block_size, split)
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.eval_iters = eval_iters
        self.rank = rank
        self.world_size = world_size
        self.seed = seed + EVAL_SEED_OFFSET
        self.device = device or torch.device("cpu")

    def weighted(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """(x, y, weight) for this rank: every rank yields ceil(eval_iters / world_size) batches
        (FSDP needs the same number of forwards on each rank); padding batches weigh 0."""
        g = torch.Generator().manual_seed(self.seed)
        high = len(self.data) - self.block_size
        starts = torch.randint(high, (self.eval_iters, self.batch_size), generator=g)
        per_rank = -(-self.eval_iters // self.world_size)
        for i in range(per_rank):
            k = self.rank + i * self.world_size
            x, y = _windows(self.data, starts[k % self.eval_iters], self.block_size, self.device)
            yield x, y, 1.0 if k < self.eval_iters else 0.0
