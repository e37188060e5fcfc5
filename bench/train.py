"""Training speed of a small GPT-2: the trainer's real loop against a plain transformers loop.

    .venv/bin/python bench/train.py                       # fp32, 2 threads, 3 rounds of 2 + 7 steps
    .venv/bin/python bench/train.py --dtype bfloat16      # bf16 autocast on both sides
    .venv/bin/python bench/train.py --rounds 1 --steps 20 --json .bench/train.json
    make bench-train

Model: 6 layers, 384 wide, 6 heads, block 256, batch 8, dropout 0, GPT-2 vocabulary padded to
50304 on both sides (the trainer pads GPT-2's 50257 to a multiple of 64; the reference gets the
same size so both do the same work). Data: the bundled Shakespeare corpus tokenized with the GPT-2
tokenizer by `nanollm.data.DataPreparer` into `.bench/` (reused on later runs).

- ours: `trainer.train(TrainingConfig(...))`, the code behind `gpt-train` (forward, backward,
  AdamW with decay groups, clipping at 1.0, the lr schedule), logging every step; step times are
  read back from the run's `events.jsonl`.
- transformers: `GPT2LMHeadModel(GPT2Config(...))` started from the same weights, trained on the
  same batches with `torch.optim.AdamW` (same lr schedule, weight decay groups, betas) and
  `clip_grad_norm_(1.0)`; its loss is transformers' own (`labels=`).

Each round runs ours then transformers, `--warmup` steps then `--steps` timed steps each, so a
busy spell on the machine hits both sides; a step is timed from fetching its batch to the end of
`zero_grad`. tokens/s = batch * block / median step time (the best step is shown too); MFU uses
the trainer's FLOPs per token and CPU peak (`trainer/mfu.py`). Other processes on the same cores
distort absolute numbers (two-thread torch slows down many times when a core is taken): read the
ratios, measured in the same run, and the load average printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nanollm.config import ModelConfig, TrainingConfig
from nanollm.data import DataPreparer
from nanollm.dataset import open_dataset
from nanollm.hf_gpt2 import nanollm_to_hf_state_dict
from nanollm.model import GPT
from trainer import train
from trainer.batches import BatchSampler
from trainer.events import read_events
from trainer.lr_schedule import LRSchedule
from trainer.mfu import peak_flops
from trainer.model_init import padded_vocab
from trainer.optimizer import decay_names

CORPUS = Path(__file__).resolve().parent.parent / "nanollm" / "assets" / "corpus" / \
    "shakespeare.txt"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class SideResult:
    """Timed steps of one implementation in one round."""

    name: str
    step_seconds: list[float]
    losses: list[float]  # loss of every step, warmup included
    flops_per_token: float

    def tokens_per_sec(self, tokens_per_step: int) -> float:
        return tokens_per_step / statistics.median(self.step_seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned)")
    p.add_argument("--steps", type=int, default=7, help="timed optimizer steps per side and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=3, help="ours-then-transformers rounds")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="bfloat16: autocast on both sides (the trainer's --dtype bfloat16)")
    p.add_argument("--data-dir", default=".bench", help="where the tokenized corpus is kept")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--verbose", action="store_true", help="show the trainer's log lines")
    p.add_argument("--seed", type=int, default=1337)
    # The benchmark's model; other sizes are for quick checks only.
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # echoed in the --json report
    for name in ("threads", "steps", "rounds", "n_layer", "n_head", "n_embd", "block_size",
                 "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if args.n_embd % args.n_head:
        p.error(f"--n-embd ({args.n_embd}) must be divisible by --n-head ({args.n_head})")
    return args


def training_config(args: argparse.Namespace, data_path: Path, out_dir: Path) -> TrainingConfig:
    """The run both sides follow; the transformers side reads lr, decay, betas and clip from it."""
    steps = args.warmup + args.steps
    return TrainingConfig(
        model=ModelConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                          block_size=args.block_size, dropout=0.0, bias=True, tokenizer="gpt2"),
        data_path=str(data_path), out_dir=str(out_dir), max_iters=steps,
        batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0,
        warmup_iters=max(1, steps // 4), min_lr=6e-5,
        eval_interval=steps, eval_iters=1, log_interval=1,  # one eval + save, after the last step
        device="cpu", dtype=args.dtype, compile=False, seed=args.seed,
        num_threads=args.threads, progress=False,
    )


def prepare_data(args: argparse.Namespace) -> Path:
    out = Path(args.data_dir) / "shakespeare-gpt2"
    return DataPreparer("gpt2").prepare_data(CORPUS, output_dir=out, block_size=args.block_size,
                                             show_progress=False)


# ----------------------------------------------------------------------------------------------
# ours: the trainer's loop


def run_ours(cfg: TrainingConfig, warmup: int, verbose: bool) -> SideResult:
    """One `train(cfg)` run in a fresh run folder; step times come from its step events."""
    with tempfile.TemporaryDirectory(prefix="bench-train-", dir=Path(cfg.data_path).parent) as d:
        cfg = cfg.replace(out_dir=d)
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink:
            train(cfg)
        events = read_events(d)
    start = next(e for e in events if e["type"] == "start")
    steps = sorted((e for e in events if e["type"] == "step"), key=lambda e: e["step"])
    if len(steps) != cfg.max_iters:
        raise RuntimeError(f"expected {cfg.max_iters} step events, found {len(steps)}")
    return SideResult("ours", [e["step_time_ms"] / 1000 for e in steps[warmup:]],
                      [e["loss"] for e in steps], start["flops_per_token"])


# ----------------------------------------------------------------------------------------------
# reference: a plain transformers loop


def initial_model(cfg: TrainingConfig, vocab_size: int) -> GPT:
    """The weights the trainer starts from (trainer/model_init.py: seed, then GPT(config))."""
    torch.manual_seed(cfg.seed)
    return GPT(cfg.model.replace(vocab_size=vocab_size))


def hf_model(start: GPT) -> torch.nn.Module:
    """GPT2LMHeadModel of the same shape holding `start`'s weights (Conv1D transposed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = start.config
    hf = GPT2LMHeadModel(GPT2Config(
        n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, n_positions=c.block_size,
        vocab_size=c.vocab_size, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
        layer_norm_epsilon=1e-5, activation_function="gelu_new", use_cache=False))
    hf.loss_type = "ForCausalLM"  # transformers' default causal-LM loss, named to skip a warning
    sd = nanollm_to_hf_state_dict(start.state_dict(), c)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [m for m in missing if m != "lm_head.weight" and not m.endswith(".attn.bias")]
    if missing or unexpected:
        raise RuntimeError(f"weight conversion failed: missing {missing}, unexpected {unexpected}")
    return hf.train()


def hf_flops_per_token(hf: torch.nn.Module, cfg: TrainingConfig) -> float:
    """6N + 12 L H Q T as in trainer/mfu.py, N without the position embedding."""
    m = cfg.model
    n = sum(p.numel() for p in hf.parameters()) - hf.transformer.wpe.weight.numel()
    return 6 * n + 12 * m.n_layer * m.n_head * m.head_dim * m.block_size


def run_hf(cfg: TrainingConfig, warmup: int, data: object, vocab_size: int) -> SideResult:
    hf = hf_model(initial_model(cfg, vocab_size))
    decay = decay_names(hf)  # the trainer's rule: 2-D tensors decay, biases and gains do not
    params = dict(hf.named_parameters())
    groups = [{"params": [p for n, p in params.items() if n in decay],
               "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    schedule = LRSchedule.from_config(cfg)
    sampler = BatchSampler(data, block_size=cfg.model.block_size, batch_size=cfg.batch_size,
                           accumulation_steps=1, seed=cfg.seed)  # the trainer's batches
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                else contextlib.nullcontext())
    seconds, losses = [], []
    for step in range(cfg.max_iters):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        [(x, y)] = sampler.next_step()
        with autocast:
            # shift_labels: y is already the next-token target of x (B, T), as in our loop.
            loss = hf(input_ids=x, labels=y, shift_labels=y.contiguous()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds.append(time.perf_counter() - t0)
    return SideResult("transformers", seconds[warmup:], losses, hf_flops_per_token(hf, cfg))


# ----------------------------------------------------------------------------------------------
# report


def merge(results: list[SideResult]) -> SideResult:
    """All rounds of one side together (step times pooled; losses of the first round)."""
    first = results[0]
    steps = [s for r in results for s in r.step_seconds]
    return SideResult(first.name, steps, first.losses, first.flops_per_token)


def report(args: argparse.Namespace, cfg: TrainingConfig, vocab_size: int,
           sides: dict[str, SideResult], loads: tuple[float, float]) -> dict[str, object]:
    tokens_per_step = cfg.batch_size * cfg.model.block_size
    dtype = DTYPES[args.dtype]
    peak = peak_flops(torch.device("cpu"), dtype, args.threads)
    rows = {}
    print(f"{'side':<13} {'median ms':>10} {'best ms':>9} {'tokens/s':>9} {'MFU':>7} "
          f"{'loss@1':>8} {'loss@end':>9}")
    for name, r in sides.items():
        tps = r.tokens_per_sec(tokens_per_step)
        util = r.flops_per_token * tps / peak if peak else math.nan
        rows[name] = {"median_step_ms": 1000 * statistics.median(r.step_seconds),
                      "best_step_ms": 1000 * min(r.step_seconds), "tokens_per_sec": tps,
                      "mfu": util, "first_loss": r.losses[0], "last_loss": r.losses[-1],
                      "timed_steps": len(r.step_seconds),
                      "step_ms": [round(1000 * t, 1) for t in r.step_seconds]}
        row = rows[name]
        print(f"{name:<13} {row['median_step_ms']:>10.0f} {row['best_step_ms']:>9.0f} "
              f"{tps:>9,.0f} {100 * util:>6.1f}% {r.losses[0]:>8.4f} {r.losses[-1]:>9.4f}")
    ratio = rows["ours"]["tokens_per_sec"] / rows["transformers"]["tokens_per_sec"]
    best_ratio = rows["transformers"]["best_step_ms"] / rows["ours"]["best_step_ms"]
    print(f"ours / transformers: {ratio:.2f}x tokens/s (median step), {best_ratio:.2f}x (best "
          f"step); load average {loads[0]:.2f} before, {loads[1]:.2f} after")
    return {"command": " ".join([os.path.relpath(sys.executable), "bench/train.py", *args.argv]),
            "config": {"n_layer": cfg.model.n_layer, "n_head": cfg.model.n_head,
                       "n_embd": cfg.model.n_embd, "block_size": cfg.model.block_size,
                       "batch_size": cfg.batch_size, "vocab_size": vocab_size,
                       "dtype": args.dtype, "threads": args.threads, "warmup": args.warmup,
                       "steps": args.steps, "rounds": args.rounds},
            "results": rows, "ratio": ratio, "best_step_ratio": best_ratio,
            "load_average": list(loads),
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data_path = prepare_data(args)
    dataset = open_dataset(data_path)
    vocab_size = padded_vocab(dataset.vocab_size, "gpt2")
    cfg = training_config(args, data_path, Path(args.data_dir) / "run")
    c = cfg.model
    print(f"train bench: {c.n_layer} layers, {c.n_embd} wide, {c.n_head} heads, block "
          f"{c.block_size}, batch {cfg.batch_size}, vocab {vocab_size} (GPT-2's "
          f"{dataset.vocab_size} padded to a multiple of 64, both sides), {args.dtype}, "
          f"{args.threads} thread(s), {args.warmup} warmup + {args.steps} timed steps, "
          f"{args.rounds} round(s); torch {torch.__version__}")
    load_before = os.getloadavg()[0]
    rounds: dict[str, list[SideResult]] = {"ours": [], "transformers": []}
    for _ in range(args.rounds):
        rounds["ours"].append(run_ours(cfg, args.warmup, args.verbose))
        torch.set_num_threads(args.threads)  # the trainer sets it too; keep both sides equal
        rounds["transformers"].append(run_hf(cfg, args.warmup, dataset.train, vocab_size))
    sides = {name: merge(results) for name, results in rounds.items()}
    summary = report(args, cfg, vocab_size, sides, (load_before, os.getloadavg()[0]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
