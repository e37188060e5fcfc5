"""Continuous batching in the step-level engine (DecodeBatch) of GPT-2 124M, against references
measured in the same run.

    .venv/bin/python bench/engine.py                 # 124M, fp32, 2 threads
    .venv/bin/python bench/engine.py --threads 1 --preset gpt2 --hf-requests 4
    make bench-engine

Four measurements, each a ratio against a reference run in the same process:
  admission    a 200-token prompt admitted into a batch of 7 decoding rows (time from admit to
               the new row's first token) / the same prompt prefilled alone. Target <= 1.3x.
  sparse step  a decode step with 2 active slots in a 16-slot batch / a step of a 2-slot batch.
               Target <= 1.1x.
  throughput   16 requests (16-token prompts, 128 new tokens, greedy) arriving together through
               the engine / the same requests one after another through transformers
               `generate(use_cache=True)`. Target >= 8x aggregate tokens/s. HF runs
               --hf-requests of them (all 16 by default) and its per-request time is scaled.
  staggered    the 16 requests arriving as a Poisson process (--rate per second): time to first
               token and inter-token latency at p50 / p99.
Timed parts interleave their rounds and report medians; the load average is printed because
other processes on the same cores distort absolute numbers (the ratios are what to read).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch
from decode import prompt_text, to_hf

from nanollm.batch import DecodeBatch
from nanollm.config import GenerationConfig, ModelConfig
from nanollm.model import GPT
from nanollm.sequence import SequenceState
from nanollm.tokenizer import Tokenizer, load_tokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned)")
    p.add_argument("--preset", default="gpt2", help="ModelConfig preset (default: 124M)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per micro-benchmark")
    p.add_argument("--requests", type=int, default=16, help="requests in the throughput runs")
    p.add_argument("--new-tokens", type=int, default=128, help="new tokens per request")
    p.add_argument("--hf-requests", type=int, default=16,
                   help="requests timed through transformers (its rate is per request)")
    p.add_argument("--rate", type=float, default=4.0, help="Poisson arrivals per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true",
                   help="a 2-layer, 64-wide model with block 256: a smoke run in seconds")
    args = p.parse_args(argv)
    for name in ("threads", "rounds", "requests", "new_tokens", "hf_requests"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate <= 0:
        p.error("--rate must be positive")
    return args


def greedy_seq(ids: list[int], tokenizer: Tokenizer, max_tokens: int) -> SequenceState:
    cfg = GenerationConfig(temperature=0.0, stop_at_eos=False, max_new_tokens=max_tokens)
    return SequenceState(ids, cfg, tokenizer, max_tokens=max_tokens)


def interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each run's returned seconds, rounds interleaved after one warmup each."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    return {name: statistics.median(t) for name, t in times.items()}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ----------------------------------------------------------------------------------------------
# admission and sparse steps


def admit_cost(model: GPT, tok: Tokenizer, long_ids: list[int], short_ids: list[int],
               decoding: int) -> float:
    """Seconds from admitting `long_ids` into a batch of `decoding` busy rows to its first token
    (0 busy rows: the prompt prefilled alone)."""
    batch = DecodeBatch(model, tok, max_batch_size=decoding + 1, prefill_budget=None)
    for _ in range(decoding):
        batch.admit(greedy_seq(short_ids, tok, 64))
    for _ in range(2 if decoding else 0):
        batch.step()  # the busy rows are decoding when the new prompt arrives
    t0 = time.perf_counter()
    slot = batch.admit(greedy_seq(long_ids, tok, 4))
    while not any(o.slot == slot for o in batch.step()):
        pass
    return time.perf_counter() - t0


def step_cost(model: GPT, tok: Tokenizer, ids: list[int], slots: int, active: int) -> float:
    """Seconds of one decode step with `active` rows in a batch of `slots` slots."""
    batch = DecodeBatch(model, tok, max_batch_size=slots)
    for _ in range(active):
        batch.admit(greedy_seq(ids, tok, 64))
    for _ in range(3):
        batch.step()
    t0 = time.perf_counter()
    batch.step()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# throughput and latency


def run_engine(model: GPT, tok: Tokenizer, prompts: list[list[int]], new_tokens: int,
               arrivals: list[float]) -> tuple[float, list[float], list[float]]:
    """Drive one DecodeBatch as a server's engine thread would: admit each request once its
    arrival time has passed, step while anything is active. Returns (seconds, TTFTs, ITLs)."""
    batch = DecodeBatch(model, tok, max_batch_size=len(prompts))
    start = time.perf_counter()
    queued = sorted(range(len(prompts)), key=lambda i: arrivals[i])
    slot_of: dict[int, int] = {}
    last: dict[int, float] = {}
    ttft: list[float] = []
    itl: list[float] = []
    while queued or batch.num_active:
        now = time.perf_counter() - start
        while queued and arrivals[queued[0]] <= now:
            i = queued.pop(0)
            slot_of[batch.admit(greedy_seq(prompts[i], tok, new_tokens))] = i
        if not batch.num_active:
            time.sleep(max(0.0, arrivals[queued[0]] - now))
            continue
        for out in batch.step():
            t = time.perf_counter() - start
            i = slot_of[out.slot]
            if i not in last:
                ttft.append(t - arrivals[i])
            else:
                itl.append(t - last[i])
            last[i] = t
            if out.finish_reason:
                del slot_of[out.slot]  # the slot may be reused by the next admission
    return time.perf_counter() - start, ttft, itl


def run_hf(hf: torch.nn.Module, prompts: list[list[int]], new_tokens: int) -> float:
    """Seconds for the requests one after another through transformers generate()."""
    t0 = time.perf_counter()
    for ids in prompts:
        idx = torch.tensor([ids])
        hf.generate(idx, attention_mask=torch.ones_like(idx), use_cache=True,  # type: ignore[operator]
                    do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    pad_token_id=50256)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = dict(n_layer=2, n_head=2, n_embd=64, block_size=256) if args.tiny else {}
    model = GPT(ModelConfig.from_preset(args.preset, **shape))
    hf = to_hf(model, torch.float32)
    model.prepare_for_inference()
    tok = load_tokenizer("gpt2")
    corpus = tok.encode(prompt_text(tok, 40 * args.requests))
    long_ids, short_ids = corpus[:200], corpus[:16]
    prompts = [corpus[16 * i:16 * (i + 1)] for i in range(args.requests)]
    load = os.getloadavg()
    print(f"engine bench: {args.preset} ({model.get_num_params() / 1e6:.0f}M params, random "
          f"weights), float32, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"load avg {load[0]:.2f} {load[1]:.2f}", flush=True)
    results: dict[str, float] = {}
    with torch.inference_mode():
        adm = interleaved({
            "busy": lambda: admit_cost(model, tok, long_ids, short_ids, 7),
            "alone": lambda: admit_cost(model, tok, long_ids, short_ids, 0),
        }, args.rounds)
        results["admission_ratio"] = adm["busy"] / adm["alone"]
        print(f"admission: 200-token prompt into 7 decoding rows {adm['busy'] * 1e3:.1f} ms, "
              f"alone {adm['alone'] * 1e3:.1f} ms -> {results['admission_ratio']:.2f}x "
              "(target <= 1.3x)", flush=True)

        steps = interleaved({
            "sparse": lambda: step_cost(model, tok, short_ids, 16, 2),
            "dense": lambda: step_cost(model, tok, short_ids, 2, 2),
        }, args.rounds * 2)
        results["sparse_step_ratio"] = steps["sparse"] / steps["dense"]
        print(f"sparse step: 2 of 16 slots {steps['sparse'] * 1e3:.1f} ms, batch of 2 "
              f"{steps['dense'] * 1e3:.1f} ms -> {results['sparse_step_ratio']:.2f}x "
              "(target <= 1.1x)", flush=True)

        n_tokens = args.requests * args.new_tokens
        together = [0.0] * args.requests
        seconds, _, _ = run_engine(model, tok, prompts, args.new_tokens, together)
        hf_seconds = run_hf(hf, prompts[: args.hf_requests], args.new_tokens)
        seconds = min(seconds, run_engine(model, tok, prompts, args.new_tokens, together)[0])
        ours_tps = n_tokens / seconds
        hf_tps = args.hf_requests * args.new_tokens / hf_seconds
        results["throughput_ratio"] = ours_tps / hf_tps
        print(f"throughput: {args.requests} requests x {args.new_tokens} tokens together: engine "
              f"{ours_tps:.1f} tok/s, transformers one at a time {hf_tps:.1f} tok/s -> "
              f"{results['throughput_ratio']:.2f}x (target >= 8x)", flush=True)

        rng = random.Random(args.seed)
        arrivals, t = [], 0.0
        for _ in range(args.requests):
            arrivals.append(t)
            t += rng.expovariate(args.rate)
        seconds, ttft, itl = run_engine(model, tok, prompts, args.new_tokens, arrivals)
        for name, values in (("ttft", ttft), ("itl", itl)):
            for q in (50, 99):
                results[f"{name}_p{q}_ms"] = percentile(values, q) * 1e3
        print(f"staggered: {args.requests} Poisson arrivals at {args.rate}/s: "
              f"{n_tokens / seconds:.1f} tok/s; TTFT p50 {results['ttft_p50_ms']:.0f} ms, "
              f"p99 {results['ttft_p99_ms']:.0f} ms; inter-token p50 {results['itl_p50_ms']:.0f}"
              f" ms, p99 {results['itl_p99_ms']:.0f} ms", flush=True)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
