"""Saving and restoring a run: `<out_dir>/latest` (resumable) and `<out_dir>/best` (weights).

`latest/` is written at every evaluation, at the end and on a graceful stop, with the trainer
state (optimizer, step, RNG streams, data position). `best/` holds weights only and is written
only when the validation loss improves, so a worse model never replaces it. Every rank takes part
in gathering the state (FSDP shards, per-rank RNG streams); only rank 0 writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nanollm import __version__
from nanollm.checkpoint import CheckpointError, save_checkpoint
from nanollm.model import GPT
from trainer.batches import BatchSampler
from trainer.distributed import DistContext, is_fsdp
from trainer.model_init import BEST, LATEST
from trainer.precision import Precision
from trainer.state import build_trainer_state, local_rng_state, restore_rng


class RunCheckpoints:
    def __init__(self, out_dir: str | Path, *, ctx: DistContext, model: nn.Module, raw_model: GPT,
                 optimizer: torch.optim.Optimizer, precision: Precision, sampler: BatchSampler,
                 tokenizer: str, provenance: dict[str, Any], config: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.ctx = ctx
        self.model = model  # possibly DDP/FSDP-wrapped and compiled
        self.raw_model = raw_model
        self.optimizer = optimizer
        self.precision = precision
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.provenance = provenance
        self.config = config

    def _full_states(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Model and optimizer state dicts, whole on rank 0 (a collective under FSDP)."""
        if not is_fsdp(self.model):
            return self.raw_model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        # Gathered in full and moved to CPU on rank 0 (other ranks get empty dicts).
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=options)
        return model_sd, optim_sd

    def save(self, *, step: int, best_val_loss: float, tokens_seen: int, best: bool,
             metrics: dict[str, Any]) -> list[Path]:
        """Write latest/ (and best/ when `best`); returns the folders written (rank 0)."""
        model_sd, optim_sd = self._full_states()
        rngs = self.ctx.all_gather_object(local_rng_state(self.ctx.device))
        if not self.ctx.is_main:
            return []
        provenance = {**self.provenance, **metrics, "step": step, "tokens_seen": tokens_seen,
                      "best_val_loss": best_val_loss,
                      "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "nanollm_version": __version__, "train_config": self.config}
        state = build_trainer_state(
            step=step, best_val_loss=best_val_loss, tokens_seen=tokens_seen,
            optimizer_state=optim_sd, scaler_state=self.precision.scaler.state_dict(),
            sampler_state=self.sampler.state_dict(), rng_per_rank=rngs,  # type: ignore[arg-type]
            config=self.config)
        config = self.raw_model.config
        written = [save_checkpoint(self.out_dir / LATEST, model_sd, config,
                                   tokenizer=self.tokenizer, provenance=provenance,
                                   trainer_state=state)]
        if best:
            written.append(save_checkpoint(self.out_dir / BEST, model_sd, config,
                                           tokenizer=self.tokenizer, provenance=provenance))
        return written

    def restore(self, state: dict[str, Any], seed: int,
                source: Path) -> tuple[int, float, int, bool]:
        """Load optimizer, scaler, data position and RNG streams from a trainer state (checked
        by trainer.state.check_trainer_state) read from `source`.

        Returns (step, best_val_loss, tokens_seen, rng_exact): rng_exact is False when the run
        was saved with another number of ranks (dropout streams are then reseeded). A state
        that does not fit this model and optimizer is a CheckpointError naming the file."""
        try:
            return self._restore(state, seed)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            reason = (str(exc).splitlines() or [""])[0]
            raise CheckpointError(
                f"{source}: does not fit this run ({type(exc).__name__}: {reason}); start a new "
                f"run from its weights instead: --init-from {source.parent} --out-dir NEW"
            ) from exc

    def _restore(self, state: dict[str, Any], seed: int) -> tuple[int, float, int, bool]:
        if is_fsdp(self.model):
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            # Every rank read the same full state from disk; each keeps its own shard.
            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            _check_optimizer_shapes(self.optimizer)
        if state.get("scaler"):
            self.precision.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        exact = restore_rng(state["rng"], self.ctx.rank, self.ctx.world_size, self.ctx.device,
                            seed)
        return (int(state["step"]), float(state["best_val_loss"]), int(state["tokens_seen"]),
                exact)


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """load_state_dict checks only the number of parameters; a moment of another shape would
    fail later, inside the first step."""
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise ValueError(f"optimizer {name!r} of shape {tuple(value.shape)} for a "
                                 f"parameter of shape {tuple(param.shape)}")
