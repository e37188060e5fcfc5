"""Serving benchmark: a real `gpt-server` under load over gRPC (in the spirit of vLLM's
benchmark_serving), against transformers and against the in-process pipeline.

    .venv/bin/python bench/serve.py                  # GPT-2 124M, random weights, fp32, 2 threads
    .venv/bin/python bench/serve.py --quick          # a tiny model: a smoke run in seconds
    .venv/bin/python bench/serve.py --request-rate 4 --num-requests 64   # Poisson arrivals
    .venv/bin/python bench/serve.py --device cuda --dtype bfloat16
    make bench-serve

The server runs in its own process (torch pinned to --threads), started on a checkpoint of
random weights written to a temp folder; this process only sends requests while it is loaded.
Every request has its own prompt of --prompt-tokens tokens from the shipped corpus and asks for
exactly --new-tokens tokens (greedy, end-of-text ignored), so all sides do the same work.

Each of --rounds rounds runs, interleaved so that a change in machine load hits every side:
  1. the baseline requests one at a time: each as one gRPC stream (concurrency 1), through
     InferencePipeline in this process, and through transformers' generate (use_cache=True);
  2. --num-requests requests over gRPC at --concurrency (all at once, or Poisson arrivals at
     --request-rate per second), through the async client.
It prints TTFT, time per output token (TPOT), inter-token latency (ITL) and end-to-end latency
at p50/p90/p99 of run 2, request and token throughput, and three ratios (medians over rounds):
  concurrency C / concurrency 1     aggregate tokens/s of run 2 over one-at-a-time gRPC;
  concurrency C / transformers      the same over transformers serving them one at a time;
  gRPC stream / pipeline            one request's end-to-end time over gRPC and in process.
The exit status is 1 if a greedy completion differs between the server and the pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.client import AsyncClient, Client, UnavailableError
from nanollm.config import GenerationConfig, ModelConfig
from nanollm.model import GPT
from nanollm.pipeline import InferencePipeline
from nanollm.tokenizer import Tokenizer, load_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from decode import hf_generate, to_hf  # the decode benchmark's HF conversion and generate

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# --quick: 2 layers of width 64 with the GPT-2 vocabulary: seconds, for smoke tests.
QUICK_MODEL = dict(n_layer=2, n_head=2, n_embd=64, block_size=256, vocab_size=50257)


@dataclass
class RequestTrace:
    """Client-side timestamps of one streamed request (perf_counter seconds)."""

    sent: float
    token_times: list[float] = field(default_factory=list)  # one per token-bearing message
    tokens: list[int] = field(default_factory=list)
    done: float = 0.0

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.sent

    @property
    def e2e(self) -> float:
        return self.done - self.sent

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first (None for one-token outputs)."""
        n = len(self.tokens)
        return (self.done - self.token_times[0]) / (n - 1) if n > 1 else None

    @property
    def itl(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny model and few requests: a smoke run in seconds")
    p.add_argument("--preset", default="gpt2", help="ModelConfig preset (default: 124M)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (server and baselines)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, server and here")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--num-requests", type=int, default=32, help="requests of the loaded run")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    p.add_argument("--request-rate", type=float, default=math.inf,
                   help="Poisson arrivals per second (default inf: all at once)")
    p.add_argument("--baseline-requests", type=int, default=4,
                   help="requests served one at a time per round (gRPC, pipeline, transformers)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the summary here")
    args = p.parse_args(argv)
    if args.quick:
        args.new_tokens = min(args.new_tokens, 16)
        args.num_requests = min(args.num_requests, 8)
        args.concurrency = min(args.concurrency, 4)
        args.baseline_requests = min(args.baseline_requests, 2)
        args.rounds = min(args.rounds, 1)
    for name in ("threads", "prompt_tokens", "new_tokens", "num_requests", "concurrency",
                 "baseline_requests", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.request_rate > 0:
        p.error("--request-rate must be > 0")
    return args


# ----------------------------------------------------------------------------------------------
# the server under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_server(checkpoint: Path, workdir: Path, args: argparse.Namespace
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """`gpt-server` on a free loopback port, in its own process with torch pinned to
    --threads. It loads while this process prepares its baselines; see wait_ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "server.cli", "--checkpoint", str(checkpoint), "--grpc-only",
           "--grpc-port", str(port), "--metrics-port", "-1", "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads),
           "--max-batch-size", str(args.concurrency),
           "--max-queue", str(max(64, args.num_requests)),
           "--max-tokens-limit", str(max(4096, args.new_tokens)),
           "--model-root", str(checkpoint.parent), "--log-dir", str(workdir / "logs")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    with (workdir / "server.out").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parent.parent)
    return proc, f"127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], target: str, workdir: Path,
               timeout: float = 300) -> None:
    """Return once the server answers with its model loaded (UNAVAILABLE until then)."""
    deadline = time.monotonic() + timeout
    with Client(target, timeout=5) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gpt-server exited with {proc.returncode}: "
                                   f"{(workdir / 'server.out').read_text()[-2000:]}")
            try:
                client.tokenize("ready?")
                return
            except UnavailableError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gpt-server was not ready after {timeout:.0f} s") from None
                time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------------
# the load


async def stream_one(client: AsyncClient, prompt: str, new_tokens: int) -> RequestTrace:
    trace = RequestTrace(sent=time.perf_counter())
    async for msg in client.stream(prompt, max_tokens=new_tokens, temperature=0.0,
                                   stop_at_eos=False):
        if msg.token_ids:
            trace.token_times.append(time.perf_counter())
            trace.tokens.extend(msg.token_ids)
    trace.done = time.perf_counter()
    return trace


async def run_load(client: AsyncClient, prompts: list[str], args: argparse.Namespace,
                   rng: random.Random) -> tuple[list[RequestTrace], float]:
    """All prompts at --concurrency, arriving at once or as a Poisson process; returns the
    traces and the wall time from the first send to the last token."""
    gate = asyncio.Semaphore(args.concurrency)

    async def one(delay: float, prompt: str) -> RequestTrace:
        await asyncio.sleep(delay)
        async with gate:
            return await stream_one(client, prompt, args.new_tokens)

    delays, t = [], 0.0
    for _ in prompts:
        delays.append(t)
        if math.isfinite(args.request_rate):
            t += rng.expovariate(args.request_rate)
    t0 = time.perf_counter()
    traces = await asyncio.gather(*(one(d, p) for d, p in zip(delays, prompts, strict=True)))
    return list(traces), time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# reporting


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def prompts_from_corpus(tokenizer: Tokenizer, n: int, n_tokens: int, seed: int) -> list[str]:
    """n distinct prompts of n_tokens tokens each, from random places in the shipped corpus."""
    from importlib import resources

    text = (resources.files("nanollm") / "assets" / "corpus" / "shakespeare.txt").read_text(
        encoding="utf-8")
    ids = tokenizer.encode(text[:400_000])
    rng = random.Random(seed)
    starts = rng.sample(range(len(ids) - n_tokens), n)
    return [tokenizer.decode(ids[s:s + n_tokens]) for s in starts]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the summary (also written to --json)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = (ModelConfig(**QUICK_MODEL) if args.quick else ModelConfig.from_preset(args.preset))
    model = GPT(config).eval()
    tokenizer = load_tokenizer("gpt2")
    workdir = Path(tempfile.mkdtemp(prefix="nanollm-bench-serve-"))
    try:
        checkpoint = save_checkpoint(workdir / "models" / "bench", model.state_dict(), config,
                                     tokenizer="gpt2", provenance={"note": "random weights"})
        res = run(args, model, tokenizer, checkpoint, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = report(args, res)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class Results:
    """What the rounds measured (throughputs in generated tokens per second)."""

    one_grpc: list[float] = field(default_factory=list)  # one request at a time over gRPC
    one_hf: list[float] = field(default_factory=list)  # one at a time, transformers generate
    overhead: list[float] = field(default_factory=list)  # gRPC e2e / pipeline e2e, per request
    loaded: list[float] = field(default_factory=list)  # at --concurrency, per round
    loaded_seconds: float = 0.0
    traces: list[RequestTrace] = field(default_factory=list)  # of the loaded runs
    mismatches: int = 0  # greedy completions that differ between server and pipeline


def run(args: argparse.Namespace, model: GPT, tokenizer: Tokenizer, checkpoint: Path,
        workdir: Path) -> Results:
    proc, target = launch_server(checkpoint, workdir, args)
    try:
        device = torch.device(args.device)
        model = model.to(device=device, dtype=DTYPES[args.dtype])
        hf = None if args.no_hf else to_hf(model, DTYPES[args.dtype]).to(device)
        pipe = InferencePipeline.from_model(model, tokenizer)  # prepares it for inference
        n_prompts = 1 + args.rounds * (args.baseline_requests + args.num_requests)
        prompts = prompts_from_corpus(tokenizer, n_prompts, args.prompt_tokens, args.seed)
        wait_ready(proc, target, workdir)
        load = os.getloadavg()
        print(f"serve bench: {'quick' if args.quick else args.preset} "
              f"({model.get_num_params() / 1e6:.1f}M params, random weights), {args.dtype} on "
              f"{args.device}, torch {torch.__version__}, threads={args.threads} (server and "
              f"here), prompt={args.prompt_tokens} tokens, new={args.new_tokens}, "
              f"load avg {load[0]:.2f} {load[1]:.2f}", flush=True)
        with torch.inference_mode():
            return asyncio.run(measure(target, pipe, hf, prompts, args))
    finally:
        stop_server(proc)


async def measure(target: str, pipe: InferencePipeline, hf: torch.nn.Module | None,
                  prompts: list[str], args: argparse.Namespace) -> Results:
    """The rounds, over one channel. The in-process baselines block the event loop on
    purpose: nothing else is in flight while they run, so they have the CPU to themselves."""
    gen = GenerationConfig(temperature=0.0, max_new_tokens=args.new_tokens, stop_at_eos=False)
    device = next(pipe.model.parameters()).device  # type: ignore[union-attr]
    rng = random.Random(args.seed)
    res = Results()
    async with AsyncClient(target, timeout=600) as client:
        warm = prompts[0]  # every side once, untimed: allocations, oneDNN primitives, channel
        await stream_one(client, warm, args.new_tokens)
        pipe.generate_detailed(warm, gen)
        if hf is not None:
            hf_generate(hf, torch.tensor([pipe.encode_prompt(warm)], device=device), 4)
        it = iter(prompts[1:])
        for r in range(args.rounds):
            for _ in range(args.baseline_requests):
                prompt = next(it)
                trace = await stream_one(client, prompt, args.new_tokens)
                t0 = time.perf_counter()
                done = pipe.generate_detailed(prompt, gen)[0]
                t_pipe = time.perf_counter() - t0
                res.mismatches += int(done.token_ids != trace.tokens)
                res.one_grpc.append(len(trace.tokens) / trace.e2e)
                res.overhead.append(trace.e2e / t_pipe)
                if hf is not None:
                    ids = torch.tensor([pipe.encode_prompt(prompt)], device=device)
                    t0 = time.perf_counter()
                    out = hf_generate(hf, ids, args.new_tokens)
                    res.one_hf.append(out.shape[1] / (time.perf_counter() - t0))
            got, seconds = await run_load(client, [next(it) for _ in range(args.num_requests)],
                                          args, rng)
            res.traces += got
            res.loaded_seconds += seconds
            res.loaded.append(sum(len(t.tokens) for t in got) / seconds)
            line = (f"  round {r + 1}: concurrency {args.concurrency} {res.loaded[-1]:.1f} tok/s"
                    f" ({seconds:.1f} s); one at a time: gRPC "
                    f"{statistics.median(res.one_grpc[-args.baseline_requests:]):.1f} tok/s")
            if res.one_hf:
                line += (f", transformers "
                         f"{statistics.median(res.one_hf[-args.baseline_requests:]):.1f} tok/s")
            print(line, flush=True)
    return res


def summarize(values: list[float]) -> dict[str, float]:
    """Mean and p50/p90/p99 in milliseconds (empty when there are no values)."""
    if not values:
        return {}
    out = {"mean": 1e3 * statistics.fmean(values)}
    out.update({f"p{q}": 1e3 * pct(values, q) for q in (50, 90, 99)})
    return out


def report(args: argparse.Namespace, res: Results) -> dict[str, Any]:
    """Print the results and return them as a summary dict."""
    traces = res.traces
    n_tokens = sum(len(t.tokens) for t in traces)
    latency = {
        "ttft_ms": summarize([t.ttft for t in traces]),
        "tpot_ms": summarize([x for t in traces if (x := t.tpot) is not None]),
        "itl_ms": summarize([x for t in traces for x in t.itl]),
        "e2e_ms": summarize([t.e2e for t in traces]),
    }
    c1, cc = statistics.median(res.one_grpc), statistics.median(res.loaded)
    hf = statistics.median(res.one_hf) if res.one_hf else None
    summary: dict[str, Any] = {
        "model": "quick" if args.quick else args.preset, "dtype": args.dtype,
        "device": args.device, "threads": args.threads, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "concurrency": args.concurrency,
        "request_rate": None if math.isinf(args.request_rate) else args.request_rate,
        "rounds": args.rounds, "requests": len(traces), "output_tokens": n_tokens,
        "request_throughput": len(traces) / res.loaded_seconds,
        "token_throughput": cc, "one_at_a_time_grpc": c1, "one_at_a_time_transformers": hf,
        **latency,
        "ratio_concurrency": cc / c1,
        "ratio_transformers": cc / hf if hf else None,
        "ratio_grpc_over_pipeline": statistics.median(res.overhead),
        "greedy_mismatches": res.mismatches,
    }
    arrivals = ("all at once" if summary["request_rate"] is None
                else f"Poisson {args.request_rate:g}/s")
    print(f"\nloaded runs: {len(traces)} requests in {args.rounds} round(s), concurrency "
          f"{args.concurrency}, arrivals {arrivals}")
    print(f"  request throughput {summary['request_throughput']:.2f} req/s, output tokens "
          f"{cc:.1f} tok/s (median of rounds), {n_tokens} tokens")
    print(f"  {'ms':<6}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, stats in latency.items():
        if stats:
            print(f"  {name[:-3].upper():<6}" + "".join(f"{v:>9.1f}" for v in stats.values()))
    print("\nratios (medians over rounds):")
    print(f"  concurrency {args.concurrency} / concurrency 1 (gRPC): {cc:.1f} / {c1:.1f} tok/s "
          f"= {cc / c1:.2f}x   (target >= 6x)")
    if hf:
        print(f"  concurrency {args.concurrency} / transformers one at a time: {cc:.1f} / "
              f"{hf:.1f} tok/s = {cc / hf:.2f}x   (target >= 8x)")
    print(f"  one gRPC stream / InferencePipeline in process, end to end: "
          f"{summary['ratio_grpc_over_pipeline']:.3f}x   (target <= 1.10x)")
    verdict = "OK" if not res.mismatches else f"{res.mismatches} MISMATCH"
    print(f"  greedy tokens, server vs pipeline: {verdict}")
    return summary


if __name__ == "__main__":
    sys.exit(1 if main()["greedy_mismatches"] else 0)
