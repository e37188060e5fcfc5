"""The training loop: `train(cfg)` runs one training job (a process, or one rank under torchrun).

    from nanollm.checkpoint import TRAINER_STATE_FILE
from nanollm.config import TrainingConfig, ModelConfig
    from trainer import train
    result = train(TrainingConfig(data_path="nanollm/assets/corpus/shakespeare.txt",
                                  model=ModelConfig(n_layer=4, n_head=4, n_embd=128,
                                                    block_size=128, tokenizer="byte"),
                                  max_iters=200, out_dir="out/tiny"))

Per optimizer step: lr from the schedule, forward/backward over this rank's micro-batches (the
global batch is batch_size * gradient_accumulation_steps windows), clip, AdamW step. Every
log_interval steps: a "step" event and log line (loss, lr, pre-clip grad norm, tokens/s, MFU);
every eval_interval steps and at the end: mean train/val loss over eval_iters fixed batches,
`latest/` saved and `best/` when val improved. SIGTERM/Ctrl-C: finish the step, save, stop.

Nothing is written to out_dir until the model, data and trainer state are loaded: a run that
cannot start (bad checkpoint, missing data) leaves a new out_dir uncreated and an old one as it
was. Console output that fails (a closed pipe) never stops the run (trainer/progress.py).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nanollm.checkpoint import TRAINER_STATE_FILE
from nanollm.config import TrainingConfig
from nanollm.dataset import PreparedDataset
from nanollm.interrupt import sigterm_raises
from nanollm.model import GPT
from trainer.batches import BatchSampler, EvalBatches
from trainer.checkpoints import RunCheckpoints
from trainer.data_source import ignored_split_note, load_dataset
from trainer.distributed import (
    DistContext,
    init_distributed,
    is_fsdp,
    shutdown,
    training_threads,
    wrap_model,
)
from trainer.events import EVENTS_FILE, EventLog
from trainer.lr_schedule import LRSchedule
from trainer.mfu import flops_per_token, mfu, peak_flops
from trainer.model_init import (
    LATEST,
    StartPoint,
    finetune_model,
    init_kind,
    load_pretrained,
    resume_model_config,
    resumed_model,
    scratch_model,
)
from trainer.model_shape import changed_fields
from trainer.optimizer import configure_optimizer, decay_names
from trainer.precision import Precision
from trainer.preflight import check_config
from trainer.progress import ProgressBar, RunLog
from trainer.run_config import write_run_config
from trainer.run_dir import clear_previous_run
from trainer.signals import GracefulStop
from trainer.step import accumulate_gradients, optimizer_step, set_lr
from trainer.wandb_logger import WandbLogger


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to change."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_val_loss: float
    last_val_loss: float | None
    interrupted: bool


def train(cfg: TrainingConfig, *, given_model_fields: Collection[str] | None = None,
          overwrite: bool = False) -> TrainResult:
    """Run a training job to max_iters (or until SIGTERM/Ctrl-C); see the module docstring.

    `given_model_fields`: the ModelConfig fields the user set, which must fit the checkpoint on
    resume and fine-tune (default: those that differ from ModelConfig's defaults).
    `overwrite`: a new run may delete an earlier run's files in out_dir (trainer/run_dir.py);
    without it such an out_dir is refused. The torch thread count is set for the run and put
    back afterwards."""
    given = changed_fields(cfg.model) if given_model_fields is None else set(given_model_fields)
    check_config(cfg, given, overwrite=overwrite)
    threads_before = torch.get_num_threads()
    ctx = init_distributed(cfg)
    finished = False
    try:
        # Before the loop there is no step to finish: SIGTERM stops the setup as Ctrl-C does.
        with sigterm_raises("the run's setup"):
            trainer: Trainer | None = Trainer(cfg, ctx, given, overwrite=overwrite)
        result = trainer.run()  # type: ignore[union-attr]
        finished = True
        return result
    finally:
        # The DDP model's reducer holds the process group: let it go first. A rank that still
        # held it when the group was destroyed could abort at exit (SIGABRT from gloo's threads)
        # after a run that had finished and saved.
        trainer = None
        shutdown(ctx, all_finished=finished)
        torch.set_num_threads(threads_before)


class Trainer:
    def __init__(self, cfg: TrainingConfig, ctx: DistContext, given: Collection[str], *,
                 overwrite: bool = False) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.given = given
        self.out_dir = Path(cfg.out_dir).expanduser()
        self.log = RunLog(console=ctx.is_main, to_file=ctx.is_main)
        self.events = EventLog(None)  # opened with the run folder
        self.wall_start = time.time()
        try:
            self._setup()
            if ctx.is_main:
                self._open_run_folder(overwrite)
        except BaseException:
            self._close()  # nothing of the run was written: the caller reports the error
            raise

    # ------------------------------------------------------------------------------------------
    # setup

    def _setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self.precision = Precision.create(cfg.dtype, ctx.device)
        start, self.dataset = self._start_point()
        note = ignored_split_note(cfg, self.dataset)
        if note is not None:
            self.log.info(note)
        self.model_source = start
        raw: GPT = start.model.to(ctx.device)
        self.raw_model = raw
        threads, self.threads_why = training_threads(raw.get_num_params(), cfg.num_threads, ctx)
        if threads is not None:
            torch.set_num_threads(threads)
        self.block_size = raw.config.block_size
        decay = decay_names(raw)
        compiled: nn.Module = torch.compile(raw) if cfg.compile else raw
        self.eval_model = compiled
        self.model = wrap_model(compiled, ctx, cfg)
        self.optimizer = configure_optimizer(
            self.model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
            betas=(cfg.beta1, cfg.beta2), device=ctx.device, decay=decay)
        self.schedule = LRSchedule.from_config(cfg)
        common = dict(block_size=self.block_size, batch_size=cfg.batch_size, rank=ctx.rank,
                      world_size=ctx.world_size, seed=cfg.seed, device=ctx.device)
        self.sampler = BatchSampler(self.dataset.train,
                                    accumulation_steps=cfg.gradient_accumulation_steps, **common)
        self.eval_sets = {
            split: EvalBatches(data, eval_iters=cfg.eval_iters, split=split, **common)
            for split, data in (("train", self.dataset.train), ("val", self.dataset.val))
        }
        self.run_config = cfg.replace(model=raw.config)
        self.checkpoints = RunCheckpoints(
            self.out_dir, ctx=ctx, model=self.model, raw_model=raw, optimizer=self.optimizer,
            precision=self.precision, sampler=self.sampler, tokenizer=start.tokenizer,
            provenance={"init_from": cfg.init_from, "source": start.source,
                        "dataset": str(self.dataset.path),
                        "dataset_sha256": self.dataset.meta.get("sha256")},
            config=self.run_config.to_dict())
        self.step, self.best_val_loss, self.tokens_seen = 0, math.inf, 0
        if start.trainer_state is not None:
            self.step, self.best_val_loss, self.tokens_seen, exact = self.checkpoints.restore(
                start.trainer_state, cfg.seed, Path(start.source) / TRAINER_STATE_FILE)
            if not exact:
                self.log.info("note: the run was saved with another number of ranks; dropout "
                              "random streams are reseeded (data order is unchanged)")
        else:
            torch.manual_seed(cfg.seed + 1 + ctx.rank)  # dropout: one stream per rank
        self.tokens_per_step = cfg.batch_size * cfg.gradient_accumulation_steps * self.block_size
        self.flops_per_token = flops_per_token(raw, self.block_size)
        self.peak = cfg.peak_flops or peak_flops(ctx.device, self.precision.dtype)
        self.wandb = WandbLogger(cfg, enabled=ctx.is_main)

    def _open_run_folder(self, overwrite: bool) -> None:
        """Claim out_dir (rank 0): the first write of the run, once everything has loaded."""
        if overwrite and self.model_source.kind != "resume":
            removed = clear_previous_run(self.out_dir)
            if removed:
                self.log.info(f"--overwrite: deleted the earlier run's {', '.join(removed)} in "
                              f"{self.out_dir}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log.open(self.out_dir)
        self.events = EventLog(self.out_dir / EVENTS_FILE)
        write_run_config(self.run_config, self.out_dir)

    def _start_point(self) -> tuple[StartPoint, PreparedDataset]:
        """Model and dataset; a fine-tune loads weights first, since they name the tokenizer."""
        cfg, kind = self.cfg, init_kind(self.cfg.init_from)
        show = self.ctx.is_main and cfg.progress
        if kind in ("preset", "path"):
            start = load_pretrained(cfg, self.given)
            dataset = load_dataset(cfg, start.tokenizer, start.model.config.block_size, self.ctx,
                                   show_progress=show)
            return finetune_model(start, dataset), dataset
        if kind == "resume":
            mc, tokenizer = resume_model_config(cfg)
            dataset = load_dataset(cfg, tokenizer, mc.block_size, self.ctx, show_progress=show)
            return resumed_model(cfg, dataset, self.given), dataset
        dataset = load_dataset(cfg, cfg.model.tokenizer, cfg.model.block_size, self.ctx,
                               show_progress=show)
        return scratch_model(cfg, dataset), dataset

    # ------------------------------------------------------------------------------------------
    # the loop

    def run(self) -> TrainResult:
        try:
            with GracefulStop() as stop:
                self._start_event()
                if self.cfg.eval_only:
                    last_val = self._evaluate(save=False)
                    return self._finish(last_val, interrupted=False, reason="eval_only")
                last_val, stop_signal = self._loop(stop)
                interrupted = stop_signal is not None
                return self._finish(last_val, interrupted=interrupted, signal=stop_signal,
                                    reason="interrupted" if interrupted else "completed")
        except BaseException as exc:
            self._fail(exc, step=self.step)
            raise
        finally:
            self._close()

    def _loop(self, stop: GracefulStop) -> tuple[float | None, str | None]:
        """Steps until max_iters or a stop signal; `latest/` is always saved at the last step.
        Returns (last val loss, the signal that stopped the run or None)."""
        cfg = self.cfg
        last_val: float | None = None
        stop_signal: str | None = None
        saved_at = self.step if self.step > 0 else -1  # a resumed step is already on disk
        bar = ProgressBar(self.step, cfg.max_iters, enabled=self.ctx.is_main and cfg.progress)
        self._interval_start, self._interval_steps = time.perf_counter(), 0
        try:
            while self.step < cfg.max_iters:
                loss, norm, lr = self._train_step()
                bar.update(1)
                last = self.step == cfg.max_iters
                if self.step % cfg.log_interval == 0 or last:
                    bar.update(0, loss=self._log_step(loss, norm, lr)["loss"], lr=lr)
                if self.step % cfg.eval_interval == 0 or last:
                    last_val = self._evaluate(save=True)
                    saved_at = self.step
                if self.ctx.any(stop.requested):  # every rank stops at the same step
                    stop_signal = stop.signal_name or "peer"
                    break
        finally:
            bar.close()
        if saved_at != self.step:
            self._save(best=False, metrics={})
        return last_val, stop_signal

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        lr = self.schedule(self.step)
        set_lr(self.optimizer, lr)
        micro_batches = self.sampler.next_step()
        loss_sum = accumulate_gradients(self.model, micro_batches, self.precision)
        norm = optimizer_step(self.model, self.optimizer, self.precision, self.cfg.grad_clip)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self._interval_steps += 1
        return loss_sum, norm, lr

    def _log_step(self, loss_sum: torch.Tensor, norm: torch.Tensor, lr: float) -> dict[str, Any]:
        """Loss averaged over the whole global batch (all ranks), throughput over the interval."""
        total = self.ctx.all_reduce_sum(loss_sum.clone()).item()
        loss = total / self.cfg.gradient_accumulation_steps
        if not math.isfinite(loss):
            raise TrainingError(f"the training loss is {loss} at step {self.step}; lower the "
                                "learning rate, use bfloat16 instead of float16, or clip "
                                "gradients (grad_clip)")
        elapsed = time.perf_counter() - self._interval_start
        steps = max(self._interval_steps, 1)
        tokens_per_sec = steps * self.tokens_per_step / max(elapsed, 1e-9)
        util = mfu(self.flops_per_token, tokens_per_sec, self.peak, self.ctx.world_size) \
            if self.peak else None
        values = {"loss": loss, "lr": lr, "grad_norm": norm.item(),
                  "tokens_per_sec": tokens_per_sec, "mfu": util,
                  "step_time_ms": 1000 * elapsed / steps, "tokens": self.tokens_seen}
        self._interval_start, self._interval_steps = time.perf_counter(), 0
        self.events.emit("step", self.step, **values)
        self.wandb.log({f"train/{k}": v for k, v in values.items()}, self.step)
        mfu_text = f"{100 * util:.2f}%" if util is not None else "n/a"
        self.log.info(f"step {self.step}/{self.cfg.max_iters} | loss {loss:.4f} | lr {lr:.3e} | "
                      f"grad norm {values['grad_norm']:.3f} | {tokens_per_sec:,.0f} tok/s | "
                      f"mfu {mfu_text} | {values['step_time_ms']:.1f} ms/step")
        return values

    @torch.no_grad()
    def _estimate_loss(self) -> dict[str, float]:
        """Mean loss over the fixed eval batches of each split (all ranks together)."""
        # FSDP's sharded parameters exist only inside the wrapper; otherwise skip DDP's hooks.
        model = self.model if is_fsdp(self.model) else self.eval_model
        model.eval()
        out = {}
        for split, batches in self.eval_sets.items():
            acc = torch.zeros(2, device=self.ctx.device)  # (sum of batch losses, batches)
            for x, y, weight in batches.weighted():
                with self.precision.autocast():
                    _, loss = model(x, y)
                acc += torch.stack([loss.float() * weight, torch.tensor(weight, device=acc.device)])
            total, count = self.ctx.all_reduce_sum(acc).tolist()
            out[split] = total / count
        model.train()
        return out

    def _evaluate(self, *, save: bool) -> float:
        """Mean losses; with `save`, latest/ is written and best/ when val improved (an
        --eval-only evaluation saves nothing, so it never counts as the best)."""
        losses = self._estimate_loss()
        val = losses["val"]
        improved = save and val < self.best_val_loss
        if improved:
            self.best_val_loss = val
        self.events.emit("eval", self.step, train_loss=losses["train"], val_loss=val,
                         best_val_loss=self.best_val_loss, improved=improved)
        self.wandb.log({"eval/train_loss": losses["train"], "eval/val_loss": val}, self.step)
        if improved:
            note = " (best so far)"
        elif math.isfinite(self.best_val_loss):
            note = f" (best {self.best_val_loss:.4f})"
        else:
            note = ""
        self.log.info(f"eval step {self.step}: train loss {losses['train']:.4f}, val loss "
                      f"{val:.4f}{note}")
        if save:
            self._save(best=improved, metrics={"train_loss": losses["train"], "val_loss": val})
        self._interval_start, self._interval_steps = time.perf_counter(), 0
        return val

    def _save(self, *, best: bool, metrics: dict[str, Any]) -> None:
        written = self.checkpoints.save(step=self.step, best_val_loss=self.best_val_loss,
                                        tokens_seen=self.tokens_seen, best=best, metrics=metrics)
        for path in written:
            self.events.emit("checkpoint", self.step, path=str(path), kind=path.name,
                             val_loss=metrics.get("val_loss"))
            self.log.info(f"saved {path}")
        self._interval_start, self._interval_steps = time.perf_counter(), 0

    # ------------------------------------------------------------------------------------------
    # events

    def _start_event(self) -> None:
        cfg, raw = self.cfg, self.raw_model
        info = {
            "init_from": cfg.init_from, "source": self.model_source.source,
            "resumed": self.model_source.kind == "resume", "max_iters": cfg.max_iters,
            "world_size": self.ctx.world_size, "device": str(self.ctx.device),
            "dtype": self.precision.name, "threads": torch.get_num_threads(),
            "threads_why": self.threads_why,
            "num_params": raw.get_num_params(), "tokens_per_step": self.tokens_per_step,
            "flops_per_token": self.flops_per_token, "peak_flops": self.peak,
            "dataset": str(self.dataset.path), "tokenizer": self.model_source.tokenizer,
            "train_tokens": len(self.dataset.train), "val_tokens": len(self.dataset.val),
            "config": self.run_config.to_dict(),
        }
        self.events.emit("start", self.step, **info)
        c = raw.config
        self.log.info(
            f"{'resuming at step ' + str(self.step) if info['resumed'] else 'starting'}: "
            f"{info['num_params'] / 1e6:.2f}M params ({c.n_layer} layers, {c.n_head} heads, "
            f"{c.n_embd} wide, block {c.block_size}, vocab {c.vocab_size}, "
            f"{info['tokenizer']}) from {info['source']}; {self.ctx.world_size} rank(s) on "
            f"{info['device']}, {info['dtype']}, {info['threads']} thread(s) ({self.threads_why}); "
            f"{self.tokens_per_step:,} tokens/step; data {info['dataset']} "
            f"({info['train_tokens']:,} train / {info['val_tokens']:,} val tokens)")

    def _finish(self, last_val: float | None, *, interrupted: bool, reason: str,
                signal: str | None = None) -> TrainResult:
        elapsed = time.time() - self.wall_start
        self.events.emit("end", self.step, reason=reason, interrupted=interrupted,
                         signal=signal, best_val_loss=self.best_val_loss, last_val_loss=last_val,
                         elapsed_s=round(elapsed, 2), checkpoint=str(self.out_dir / "latest"))
        what = f"interrupted by {signal}" if interrupted else reason.replace("_", " ")
        if reason == "eval_only":
            result = f"val loss {last_val:.4f}"
        elif math.isfinite(self.best_val_loss):
            result = f"best val loss {self.best_val_loss:.4f}"
        else:
            result = f"not evaluated yet; {self.out_dir / LATEST} saved"
        self.log.info(f"done ({what}) at step {self.step} in {elapsed:.1f} s; {result}")
        return TrainResult(self.out_dir, self.step, self.best_val_loss, last_val, interrupted)

    def _fail(self, exc: BaseException, step: int) -> None:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            message = type(exc).__name__
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.events.emit("error", step, message=message, error_type=type(exc).__name__)
        if not isinstance(exc, KeyboardInterrupt | SystemExit):
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log.file_only(detail.rstrip())
        self._close()

    def _close(self) -> None:
        if hasattr(self, "wandb"):
            self.wandb.finish()
        self.events.close()
        self.log.close()
