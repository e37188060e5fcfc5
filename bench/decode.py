"""Greedy decode speed of GPT-2 124M: this project's inference path against transformers.

    .venv/bin/python bench/decode.py                      # 2 threads, batch 1 and 8, fp32
    .venv/bin/python bench/decode.py --threads 1 --batch-sizes 1 --new-tokens 128
    .venv/bin/python bench/decode.py --dtype bfloat16
    make bench-decode

Three runs per batch size B, with the same random weights (ours converted to a transformers
`GPT2LMHeadModel` by nanollm.hf_gpt2), the same prompt (the first --prompt-tokens tokens of the
shipped corpus) and the same number of new tokens:
  ours (pipeline)  InferencePipeline.generate_detailed, temperature=0, num_samples=B: the public
                   path (sampler, detokenizer and stop checks included);
  ours batch       the same B sequences admitted into a DecodeBatch and stepped directly
                   (the step API the server's engine drives; no pipeline around it);
  HF               GPT2LMHeadModel.generate(use_cache=True, do_sample=False) on B copies.
Each runs once as warmup, then --repeats rounds run each once, interleaved; the best run is
reported. tokens/s counts new tokens over all rows (B * new_tokens / seconds, prefill included).
The bench checks that all three chose the same greedy tokens and prints OK or MISMATCH (exit
status 1 on a mismatch).

Other processes on the same cores distort absolute numbers; read the ratio (ours / HF), which
is measured in the same run, and look at the load average printed at the top.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import torch

from nanollm.batch import DecodeBatch
from nanollm.config import GenerationConfig, ModelConfig
from nanollm.hf_gpt2 import model_config_to_hf, nanollm_to_hf_state_dict
from nanollm.model import GPT
from nanollm.pipeline import InferencePipeline
from nanollm.sequence import SequenceState
from nanollm.tokenizer import Tokenizer, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Result:
    """Timings of one implementation at one batch size."""

    seconds: list[float]
    tokens: torch.Tensor  # (B, new_tokens) the greedy tokens of the last run

    @property
    def best(self) -> float:
        return min(self.seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side; best is kept")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--preset", default="gpt2", help="ModelConfig preset (default: 124M)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("threads", "prompt_tokens", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in args.batch_sizes):
        p.error("--batch-sizes must all be at least 1")
    return args


# ----------------------------------------------------------------------------------------------
# models


def to_hf(model: GPT, dtype: torch.dtype) -> torch.nn.Module:
    """A transformers GPT2LMHeadModel holding the same weights as `model` (nanollm.hf_gpt2's
    export conversion: Conv1D weights transposed, tied head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = model_config_to_hf(model.config, "gpt2", dtype)
    hf = GPT2LMHeadModel(GPT2Config(**hf_config))
    sd = nanollm_to_hf_state_dict(model.state_dict(), model.config, dtype)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"weight conversion failed: missing {missing}, unexpected {unexpected}")
    return hf.to(dtype).eval()


# ----------------------------------------------------------------------------------------------
# the three runs; each returns (B, new_tokens) greedy tokens


def ours_batch(model: GPT, tokenizer: Tokenizer, prompt_ids: list[int], B: int,
               new_tokens: int) -> torch.Tensor:
    """The step API a server drives: B greedy sequences admitted into a DecodeBatch, stepped
    until they finish (no pipeline around it)."""
    config = GenerationConfig(temperature=0.0, max_new_tokens=new_tokens, stop_at_eos=False)
    batch = DecodeBatch(model, tokenizer, max_batch_size=B, prefill_budget=None,
                        max_len=len(prompt_ids) + new_tokens)
    rows = [SequenceState(prompt_ids, config, tokenizer, max_tokens=new_tokens) for _ in range(B)]
    for row in rows:
        batch.admit(row)
    while batch.num_active:
        batch.step()
    return torch.tensor([row.token_ids for row in rows], dtype=torch.long)


def ours_pipeline(pipe: InferencePipeline, text: str, B: int, new_tokens: int) -> torch.Tensor:
    """The public path: one prompt, B greedy samples (rows), as a user would ask for them."""
    config = GenerationConfig(temperature=0.0, max_new_tokens=new_tokens, num_samples=B,
                              stop_at_eos=False)
    completions = pipe.generate_detailed(text, config)
    return torch.tensor([c.token_ids for c in completions], dtype=torch.long)


def hf_generate(hf: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    out = hf.generate(  # type: ignore[operator]
        prompt, attention_mask=torch.ones_like(prompt), use_cache=True, do_sample=False,
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=50256,
    )
    return out[:, prompt.shape[1]:]


def measure(runs: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, Result]:
    """A warmup of each, then `repeats` rounds that run each once, interleaved, so that a change
    in machine load hits every side alike."""
    results = {name: Result([], fn()) for name, fn in runs.items()}  # warmup
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            tokens = fn()
            results[name].seconds.append(time.perf_counter() - t0)
            results[name].tokens = tokens
    return results


def prompt_text(tokenizer: Tokenizer, n_tokens: int) -> str:
    """The first n_tokens tokens of the shipped corpus, as text that encodes back to them."""
    corpus = resources.files("nanollm") / "assets" / "corpus" / "shakespeare.txt"
    ids = tokenizer.encode(corpus.read_text(encoding="utf-8")[: 20 * n_tokens])[:n_tokens]
    return tokenizer.decode(ids)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = DTYPES[args.dtype]
    config = ModelConfig.from_preset(args.preset)
    model = GPT(config).to(dtype)
    hf = to_hf(model, dtype)
    tokenizer = load_tokenizer("gpt2")
    pipe = InferencePipeline.from_model(model, tokenizer)  # calls prepare_for_inference()
    text = prompt_text(tokenizer, args.prompt_tokens)
    ids1 = pipe.encode_prompt(text)  # the ids the pipeline will use
    prompt1 = torch.tensor([ids1])  # (1, T)
    load = os.getloadavg()
    print(f"decode bench: {args.preset} ({model.get_num_params() / 1e6:.0f}M params, random "
          f"weights), {args.dtype}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"prompt={prompt1.shape[1]} tokens, new={args.new_tokens}, best of {args.repeats}, "
          f"load avg {load[0]:.2f} {load[1]:.2f}")
    print("  tok/s = batch * new tokens / wall time of the whole call (prefill included)")

    rows = []
    all_ok = True
    with torch.inference_mode():
        for B in args.batch_sizes:
            prompt = prompt1.expand(B, -1).contiguous()  # (B, T): B samples of one prompt
            res = measure({
                "pipeline": lambda B=B: ours_pipeline(pipe, text, B, args.new_tokens),
                "batch": lambda B=B: ours_batch(model, tokenizer, ids1, B, args.new_tokens),
                "hf": lambda p=prompt: hf_generate(hf, p, args.new_tokens),
            }, args.repeats)
            n = B * args.new_tokens
            tps = {name: n / r.best for name, r in res.items()}
            same = {name: torch.equal(res[name].tokens, res["hf"].tokens)
                    for name in ("pipeline", "batch")}
            all_ok &= all(same.values())
            rows.append(f"{B:>5}  {tps['pipeline']:>14.1f}  {tps['batch']:>9.1f}  {tps['hf']:>9.1f}"
                        f"  {tps['pipeline'] / tps['hf']:>7.2f}x"
                        f"  {'OK' if all(same.values()) else 'MISMATCH':>8}")
            medians = ", ".join(f"{name} {n / statistics.median(r.seconds):.1f}"
                                for name, r in res.items())
            print(f"  batch {B}: medians (tok/s) {medians}", flush=True)
            for name, ok in same.items():
                if not ok:
                    row, step = (res[name].tokens != res["hf"].tokens).nonzero()[0].tolist()
                    print(f"  batch {B}: {name} differs from HF at row {row}, step {step}")
    print(f"{'batch':>5}  {'ours (pipeline)':>14}  {'ours batch':>9}  {'HF tok/s':>9}"
          f"  {'ours/HF':>8}  {'tokens':>8}")
    print("\n".join(rows))
    print("ours = InferencePipeline.generate_detailed (greedy); "
          "batch = DecodeBatch stepped directly;\n"
          "HF = GPT2LMHeadModel.generate(use_cache=True); tokens: greedy ids equal to HF's")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
