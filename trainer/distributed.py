"""One process or many: rank/world from torchrun's environment, the process group, model wrapping.

    torchrun --standalone --nproc_per_node=4 -m trainer.cli --config config/train_demo.yaml

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and MASTER_ADDR/PORT. Without them
this is a single process (rank 0 of 1) and no process group is created. NCCL is used on GPUs
(one device per LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

from nanollm.config import ConfigError, TrainingConfig
from nanollm.device import SMALL_MODEL_PARAMS, resolve_device


@dataclass
class DistContext:
    """Where this process sits in the job. `world_size == 1` means no process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 logs, writes events and saves checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of `t` over ranks (in place; identity in one process)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (used to stop all ranks at one step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_gather_object(self, obj: object) -> list[object]:
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def env_world() -> tuple[int, int, int, int]:
    """(rank, local_rank, world_size, local_world_size) from torchrun's variables, or (0, 0, 1,
    1) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return rank, local_rank, world, local_world


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def training_threads(num_params: int, requested: int | None,
                     ctx: DistContext) -> tuple[int | None, str]:
    """(torch threads for this rank, why): `requested` when given. On CPU, 1 for a model under
    SMALL_MODEL_PARAMS: its matmuls are too small to share, and spinning threads collapse when
    another process is busy (a tiny model on a shared 2-core machine: 159 tok/s with 2 threads,
    14,938 with 1); a larger model gets the machine's cores shared among its local ranks. On a
    GPU the same share under torchrun (which sets OMP_NUM_THREADS=1), else torch's default
    (None: leave it)."""
    if requested is not None:
        return requested, "--num-threads"
    cores, ranks = cpu_count(), ctx.local_world_size
    if ctx.device.type == "cpu" and num_params < SMALL_MODEL_PARAMS:
        return 1, f"auto: model under {SMALL_MODEL_PARAMS / 1e6:g}M params"
    if ctx.device.type == "cpu" or ctx.world_size > 1:
        return max(1, cores // ranks), f"auto: {cores} cores / {ranks} local rank(s)"
    return None, "torch default"


def pick_device(cfg: TrainingConfig, local_rank: int, world_size: int) -> torch.device:
    """cfg.device, with one GPU per local rank when several ranks share a machine."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world_size > 1:
        if device.index is not None:
            raise ConfigError(f"TrainingConfig.device = {cfg.device!r} names one GPU, but torchrun "
                              "starts several ranks; use 'cuda' (one GPU per LOCAL_RANK)")
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(cfg: TrainingConfig) -> DistContext:
    """Create the process group when run by torchrun and pin the device (the thread count is
    set once the model size is known: `training_threads`)."""
    rank, local_rank, world, local_world = env_world()
    device = pick_device(cfg, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = cfg.backend if cfg.backend != "auto" else (
            "nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl" and device.type != "cuda":
            raise ConfigError("TrainingConfig.backend = 'nccl' needs CUDA devices; use 'gloo' on "
                              "CPU (or backend: auto)")
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
    return DistContext(rank, local_rank, world, local_world, device)


def shutdown(ctx: DistContext, all_finished: bool = False) -> None:
    """Destroy the process group. `all_finished`: every rank finished the run, so they
    first meet at a barrier, and none tears down its side while another still talks to it
    (after a failure a barrier could wait forever for a rank that is gone)."""
    if ctx.enabled and dist.is_initialized():
        if all_finished:
            dist.barrier()
        gc.collect()  # objects holding the group (DDP reducers) go before it
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, cfg: TrainingConfig) -> nn.Module:
    """DDP (default) or FSDP around an already placed (and maybe compiled) model."""
    if cfg.fsdp:
        return _wrap_fsdp(model, ctx)
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def _wrap_fsdp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Shard parameters, gradients and optimizer state per transformer block (FSDP1)."""
    if ctx.device.type != "cuda":
        raise ConfigError("TrainingConfig.fsdp needs CUDA GPUs; on CPU use DDP (the default, "
                          "fsdp: false)")
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from nanollm.model import Block

    if not dist.is_initialized():  # one GPU without torchrun: a group of one
        raise ConfigError("TrainingConfig.fsdp needs a process group: start with torchrun "
                          "(also for one GPU: torchrun --nproc_per_node=1 ...)")
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block})
    # use_orig_params keeps parameter names and lets AdamW's decay groups and torch.compile work.
    return FSDP(model, auto_wrap_policy=policy, device_id=ctx.device, use_orig_params=True)


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return isinstance(model, FSDP)


@contextlib.contextmanager
def maybe_no_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on micro-steps that are not the last of an optimizer step."""
    if sync or not hasattr(model, "no_sync"):
        yield
    else:
        with model.no_sync():
            yield
