"""Torch threads per rank: one for small CPU models (fast and steady on a busy machine), the
cores shared among local ranks for large ones, --num-threads when given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanollm.device import SMALL_MODEL_PARAMS
from trainer import train
from trainer.distributed import DistContext, cpu_count, training_threads
from trainer.events import read_events

CPU = torch.device("cpu")


def test_thread_choice() -> None:
    one = DistContext(device=CPU)
    two_ranks = DistContext(rank=1, local_rank=1, world_size=2, local_world_size=2, device=CPU)
    assert training_threads(1_000_000, None, one)[0] == 1
    assert training_threads(1_000_000, None, two_ranks)[0] == 1
    assert training_threads(SMALL_MODEL_PARAMS, None, one)[0] == cpu_count()
    assert training_threads(SMALL_MODEL_PARAMS, None, two_ranks)[0] == max(1, cpu_count() // 2)
    assert training_threads(1_000_000, 3, two_ranks) == (3, "--num-threads")
    gpu = DistContext(device=torch.device("cuda", 0))
    assert training_threads(1_000_000, None, gpu) == (None, "torch default")


def test_a_small_model_trains_on_one_thread_and_the_count_is_put_back(tiny_train_config) -> None:
    cfg = tiny_train_config(max_iters=1, eval_interval=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(cfg)
        assert torch.get_num_threads() == 2  # train() leaves the caller's setting as it was
    finally:
        torch.set_num_threads(before)
    start = read_events(cfg.out_dir)[0]
    assert start["threads"] == 1 and start["threads_why"].startswith("auto: model under 20M")
    log = (Path(cfg.out_dir) / "train.log").read_text()
    assert "1 thread(s) (auto: model under 20M params)" in log


@pytest.mark.usefixtures("one_torch_thread")
def test_num_threads_wins(tiny_train_config) -> None:
    cfg = tiny_train_config(max_iters=1, eval_interval=1, num_threads=2)
    train(cfg)
    start = read_events(cfg.out_dir)[0]
    assert (start["threads"], start["threads_why"]) == (2, "--num-threads")
