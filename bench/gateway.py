"""Gateway benchmark: the same load through the REST gateway (OpenAI-style /v1/completions
streamed as server-sent events) and directly over gRPC, against one real `gpt-server`, in one run.

    .venv/bin/python bench/gateway.py                # GPT-2 124M, random weights, fp32, 2 threads
    .venv/bin/python bench/gateway.py --tiny         # a tiny model: a smoke run in seconds
    .venv/bin/python bench/gateway.py --concurrency 16 --num-requests 32 --rounds 5
    make bench-gateway

`gpt-server` (gRPC and its built-in gateway, as `make serve` runs it) works in its own process,
torch pinned to --threads, on a checkpoint of random weights written to a temp folder. Every
request asks for exactly --new-tokens tokens (greedy, end-of-text ignored) and both paths get
the same prompts, so they do the same work. Each of --rounds rounds runs both paths, the order
alternating from round to round so that a change in machine load hits both:
  1. TTFT: --ttft-requests requests one at a time, REST and gRPC taking turns request by
     request: the time to the first token, and what the gateway adds to it;
  2. throughput: --num-requests requests at --concurrency through one path, then the same
     prompts through the other: generated tokens per second of each.
It prints per-round numbers and, as medians over rounds, the throughput ratio REST / gRPC
(target: at most 10% lower through REST) and the median TTFT added by REST (target: at most
5 ms). The exit status is 1 if the two paths generated different numbers of tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.client import AsyncClient
from nanollm.config import ModelConfig
from nanollm.model import GPT
from nanollm.tokenizer import load_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from serve import QUICK_MODEL, pct, prompts_from_corpus  # the serving benchmark's helpers

REST, GRPC = "REST", "gRPC"
TARGET_RATIO, TARGET_ADDED_MS = 0.90, 5.0


@dataclass
class Trace:
    """One streamed request, client side (perf_counter seconds)."""

    sent: float
    first: float = 0.0  # the first message carrying text
    done: float = 0.0
    tokens: int = 0

    @property
    def ttft(self) -> float:
        return self.first - self.sent


@dataclass
class Results:
    """Per path: TTFTs of the one-at-a-time phase, tokens/s and traces of the loaded runs."""

    ttft: dict[str, list[float]] = field(default_factory=lambda: {REST: [], GRPC: []})
    throughput: dict[str, list[float]] = field(default_factory=lambda: {REST: [], GRPC: []})
    loaded: dict[str, list[Trace]] = field(default_factory=lambda: {REST: [], GRPC: []})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="tiny model and few requests: a smoke run in seconds")
    p.add_argument("--preset", default="gpt2", help="ModelConfig preset (default: 124M)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the server's)")
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--num-requests", type=int, default=16, help="requests per loaded run")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    p.add_argument("--ttft-requests", type=int, default=8,
                   help="one-at-a-time requests per path and round, for TTFT")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the summary here")
    args = p.parse_args(argv)
    if args.tiny:
        args.new_tokens = min(args.new_tokens, 16)
        args.num_requests = min(args.num_requests, 4)
        args.concurrency = min(args.concurrency, 2)
        args.ttft_requests = min(args.ttft_requests, 2)
        args.rounds = min(args.rounds, 1)
    for name in ("threads", "prompt_tokens", "new_tokens", "num_requests", "concurrency",
                 "ttft_requests", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ----------------------------------------------------------------------------------------------
# the server under test


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    grpc: str = ""
    rest: str = ""


def launch(checkpoint: Path, workdir: Path, args: argparse.Namespace) -> Server:
    """`gpt-server` (gRPC and gateway) on free loopback ports, torch pinned to --threads."""
    cmd = [sys.executable, "-m", "server.cli", "--checkpoint", str(checkpoint),
           "--port", "0", "--grpc-port", "0", "--metrics-port", "-1", "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads),
           "--max-batch-size", str(args.concurrency),
           "--max-queue", str(max(64, args.num_requests)),
           "--max-tokens-limit", str(max(4096, args.new_tokens)),
           "--model-root", str(checkpoint.parent), "--log-dir", str(workdir / "logs"),
           "--jobs-root", str(workdir / "jobs")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    log = workdir / "server.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parent.parent)
    return Server(proc, log)


def wait_ready(server: Server, timeout: float = 300) -> None:
    """Read both addresses from the startup log, then wait for the gateway's /ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gpt-server exited with {server.proc.returncode}: "
                               f"{server.log.read_text()[-2000:]}")
        text = server.log.read_text()
        grpc = re.search(r"gRPC server listening on (\S+)", text)
        rest = re.search(r"REST gateway on (\S+)", text)
        if grpc and rest:
            server.grpc, server.rest = grpc[1], rest[1]
            try:
                if httpx2.get(f"{server.rest}/ready", timeout=5).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"gpt-server was not ready after {timeout:.0f} s")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# ----------------------------------------------------------------------------------------------
# one request through each path


async def via_rest(http: httpx2.AsyncClient, prompt: str, new_tokens: int) -> Trace:
    body = {"model": "gpt", "prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
            "stop_at_eos": False, "stream": True, "stream_options": {"include_usage": True}}
    trace = Trace(sent=time.perf_counter())
    async with http.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"REST {response.status_code}: {(await response.aread())!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not trace.first and chunk["choices"] and chunk["choices"][0]["text"]:
                trace.first = time.perf_counter()
            if chunk.get("usage"):
                trace.tokens = chunk["usage"]["completion_tokens"]
    trace.done = time.perf_counter()
    return trace


async def via_grpc(client: AsyncClient, prompt: str, new_tokens: int) -> Trace:
    trace = Trace(sent=time.perf_counter())
    async for message in client.stream(prompt, max_tokens=new_tokens, temperature=0.0,
                                       stop_at_eos=False):
        if not trace.first and message.text:
            trace.first = time.perf_counter()
        trace.tokens += len(message.token_ids)
    trace.done = time.perf_counter()
    return trace


OneRequest = Callable[[str, int], Awaitable[Trace]]


async def loaded_run(one: OneRequest, prompts: list[str], args: argparse.Namespace
                     ) -> tuple[list[Trace], float]:
    """All prompts, at most --concurrency in flight; the traces and tokens per second."""
    gate = asyncio.Semaphore(args.concurrency)

    async def limited(prompt: str) -> Trace:
        async with gate:
            return await one(prompt, args.new_tokens)

    t0 = time.perf_counter()
    traces = await asyncio.gather(*(limited(p) for p in prompts))
    return list(traces), sum(t.tokens for t in traces) / (time.perf_counter() - t0)


async def measure(server: Server, prompts: list[str], args: argparse.Namespace) -> Results:
    res = Results()
    async with AsyncClient(server.grpc, timeout=600) as client, \
            httpx2.AsyncClient(base_url=server.rest, timeout=600) as http:
        paths: dict[str, OneRequest] = {
            REST: lambda prompt, n: via_rest(http, prompt, n),
            GRPC: lambda prompt, n: via_grpc(client, prompt, n)}
        for one in paths.values():  # untimed: channel, connections, oneDNN primitives
            await one(prompts[0], args.new_tokens)
        it = iter(prompts[1:])
        for r in range(args.rounds):
            order = [REST, GRPC] if r % 2 == 0 else [GRPC, REST]
            ttft: dict[str, list[float]] = {REST: [], GRPC: []}
            for i in range(args.ttft_requests):
                prompt = next(it)
                for name in order if i % 2 == 0 else order[::-1]:
                    ttft[name].append((await paths[name](prompt, 4)).ttft)
            batch = [next(it) for _ in range(args.num_requests)]
            rate: dict[str, float] = {}
            for name in order:
                traces, rate[name] = await loaded_run(paths[name], batch, args)
                res.loaded[name] += traces
                res.throughput[name].append(rate[name])
            for name in (REST, GRPC):
                res.ttft[name].append(statistics.median(ttft[name]))
            print(f"  round {r + 1}: throughput REST {rate[REST]:.1f}, gRPC {rate[GRPC]:.1f} "
                  f"tok/s ({rate[REST] / rate[GRPC]:.3f}); median TTFT REST "
                  f"{1e3 * res.ttft[REST][-1]:.1f}, gRPC {1e3 * res.ttft[GRPC][-1]:.1f} ms",
                  flush=True)
    return res


# ----------------------------------------------------------------------------------------------
# running and reporting


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the summary (also written to --json)."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    config = ModelConfig(**QUICK_MODEL) if args.tiny else ModelConfig.from_preset(args.preset)
    model = GPT(config)
    tokenizer = load_tokenizer("gpt2")
    n_prompts = 1 + args.rounds * (args.ttft_requests + args.num_requests)
    prompts = prompts_from_corpus(tokenizer, n_prompts, args.prompt_tokens, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="nanollm-bench-gateway-"))
    try:
        checkpoint = save_checkpoint(workdir / "models" / "bench", model.state_dict(), config,
                                     tokenizer="gpt2", provenance={"note": "random weights"})
        server = launch(checkpoint, workdir, args)
        try:
            wait_ready(server)
            load = os.getloadavg()
            print(f"gateway bench: {'tiny' if args.tiny else args.preset} "
                  f"({model.get_num_params() / 1e6:.1f}M params, random weights), {args.dtype} "
                  f"on {args.device}, torch {torch.__version__}, threads={args.threads} "
                  f"(server), prompt={args.prompt_tokens} tokens, new={args.new_tokens}, "
                  f"concurrency {args.concurrency}, {args.num_requests} requests per run, "
                  f"load avg {load[0]:.2f} {load[1]:.2f}", flush=True)
            res = asyncio.run(measure(server, prompts, args))
        finally:
            stop(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = report(args, res)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def ms(values: list[float], q: float) -> float:
    return 1e3 * pct(values, q)


def report(args: argparse.Namespace, res: Results) -> dict[str, Any]:
    rest, grpc = (statistics.median(res.throughput[p]) for p in (REST, GRPC))
    ratio = statistics.median(r / g for r, g in zip(res.throughput[REST], res.throughput[GRPC],
                                                    strict=True))
    ttft = {p: 1e3 * statistics.median(res.ttft[p]) for p in (REST, GRPC)}
    added = statistics.median(1e3 * (r - g) for r, g in zip(res.ttft[REST], res.ttft[GRPC],
                                                            strict=True))
    tokens = {p: sum(t.tokens for t in res.loaded[p]) for p in (REST, GRPC)}
    loaded_ttft = {p: ms([t.ttft for t in res.loaded[p]], 50) for p in (REST, GRPC)}
    summary: dict[str, Any] = {
        "model": "tiny" if args.tiny else args.preset, "dtype": args.dtype,
        "device": args.device, "threads": args.threads, "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens, "concurrency": args.concurrency,
        "num_requests": args.num_requests, "rounds": args.rounds,
        "throughput_rest": rest, "throughput_grpc": grpc, "throughput_ratio": ratio,
        "ttft_ms_rest": ttft[REST], "ttft_ms_grpc": ttft[GRPC], "ttft_added_ms": added,
        "loaded_ttft_p50_ms_rest": loaded_ttft[REST], "loaded_ttft_p50_ms_grpc": loaded_ttft[GRPC],
        "output_tokens_rest": tokens[REST], "output_tokens_grpc": tokens[GRPC],
        "targets_met": ratio >= TARGET_RATIO and added <= TARGET_ADDED_MS,
    }
    verdict = {True: "OK", False: "MISSED"}
    print(f"\nmedians over {args.rounds} round(s):")
    print(f"  token throughput at concurrency {args.concurrency}, REST / gRPC: {rest:.1f} / "
          f"{grpc:.1f} tok/s = {ratio:.3f}   (target >= {TARGET_RATIO:.2f}: "
          f"{verdict[ratio >= TARGET_RATIO]})")
    print(f"  TTFT one request at a time: REST {ttft[REST]:.1f} ms, gRPC {ttft[GRPC]:.1f} ms, "
          f"added by REST {added:+.1f} ms   (target <= {TARGET_ADDED_MS:.0f} ms: "
          f"{verdict[added <= TARGET_ADDED_MS]})")
    print(f"  TTFT p50 under load: REST {loaded_ttft[REST]:.1f} ms, gRPC "
          f"{loaded_ttft[GRPC]:.1f} ms; tokens generated: REST {tokens[REST]}, gRPC "
          f"{tokens[GRPC]} ({'same work' if tokens[REST] == tokens[GRPC] else 'DIFFERENT'})")
    return summary


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["output_tokens_rest"] == result["output_tokens_grpc"] else 1)
