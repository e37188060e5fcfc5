"""What `trainer_state.pt` holds, and how RNG states are captured and restored.

trainer_state.pt is loaded with `torch.load(weights_only=True)`, so it may contain only tensors
and plain containers of str/int/float/bool/None. numpy's RNG state (a tuple with an ndarray) is
stored as a dict holding a tensor.

    {"version": 1, "step": int, "best_val_loss": float, "tokens_seen": int,
     "optimizer": optimizer.state_dict(), "scaler": GradScaler.state_dict(),
     "sampler": {"generator": ByteTensor, "steps_drawn": int},      # the data position
     "rng": {"torch": [ByteTensor per rank], "cuda": [ByteTensor per rank] | None,
             "numpy": {...}},
     "world_size": int, "config": TrainingConfig.to_dict()}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanollm.checkpoint import CheckpointError

STATE_VERSION = 1


# Keys of trainer_state.pt that resuming reads, with the types they must have.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "version": int, "step": int, "best_val_loss": (int, float), "tokens_seen": int,
    "optimizer": dict, "sampler": dict, "rng": dict}


def check_trainer_state(state: dict[str, Any], path: Path) -> None:
    """CheckpointError naming the file unless `state` has what a resume reads (a damaged or
    foreign trainer_state.pt would otherwise fail deep inside torch with a KeyError)."""
    fix = f"start a new run from its weights instead: --init-from {path.parent} --out-dir NEW"
    for key, kind in _REQUIRED.items():
        if key not in state:
            raise CheckpointError(f"{path}: not a trainer state nanoLLM can resume (no {key!r}); "
                                  f"{fix}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise CheckpointError(f"{path}: {key!r} has the wrong type "
                                  f"({type(state[key]).__name__}); {fix}")
    if state["version"] > STATE_VERSION:
        raise CheckpointError(f"{path}: written by a newer nanoLLM (trainer state version "
                              f"{state['version']} > {STATE_VERSION}); upgrade nanollm-gpt")
    rng, sampler = state["rng"], state["sampler"]
    if not isinstance(rng.get("torch"), list) or not rng["torch"] or \
            not isinstance(rng.get("numpy"), dict):
        raise CheckpointError(f"{path}: its RNG states are missing or damaged; {fix}")
    if not isinstance(sampler.get("generator"), torch.Tensor):
        raise CheckpointError(f"{path}: its data position (sampler) is missing or damaged; {fix}")


def numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_numpy_rng_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"],
                         state["cached_gaussian"]))


def local_rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """This rank's torch RNG streams (dropout uses them)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(rng: dict[str, Any], rank: int, world_size: int, device: torch.device,
                seed: int) -> bool:
    """Put back this rank's RNG streams. Returns False (and reseeds) when the saved run had a
    different number of ranks, so the streams cannot be matched one to one."""
    set_numpy_rng_state(rng["numpy"])
    per_rank = rng["torch"]
    if len(per_rank) != world_size:
        torch.manual_seed(seed + rank + 7919 * len(per_rank))
        return False
    torch.set_rng_state(per_rank[rank])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"][rank], device)
    return True


def build_trainer_state(
    *,
    step: int,
    best_val_loss: float,
    tokens_seen: int,
    optimizer_state: dict[str, Any],
    scaler_state: dict[str, Any],
    sampler_state: dict[str, Any],
    rng_per_rank: list[dict[str, torch.Tensor | None]],
    config: dict[str, Any],
) -> dict[str, Any]:
    cuda = [r["cuda"] for r in rng_per_rank]
    return {
        "version": STATE_VERSION,
        "step": step,
        "best_val_loss": best_val_loss,
        "tokens_seen": tokens_seen,
        "optimizer": optimizer_state,
        "scaler": scaler_state,
        "sampler": sampler_state,
        "rng": {
            "torch": [r["torch"] for r in rng_per_rank],
            "cuda": cuda if all(c is not None for c in cuda) else None,
            "numpy": numpy_rng_state(),
        },
        "world_size": len(rng_per_rank),
        "config": config,
    }
