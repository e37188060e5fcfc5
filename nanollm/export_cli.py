"""gpt-export: convert any checkpoint nanoLLM reads into a HuggingFace GPT-2 folder.

    gpt-export out/latest hf-model/                      # nanoLLM checkpoint -> HF folder
    gpt-export out-shakespeare/ckpt.pt hf-model/ --dtype bfloat16
    python -c "from transformers import GPT2LMHeadModel as M; M.from_pretrained('hf-model')"

The folder holds config.json, model.safetensors, generation_config.json and, for the GPT-2
tokenizer, vocab.json + merges.txt + tokenizer_config.json (AutoTokenizer loads them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nanollm.checkpoint import CheckpointError
from nanollm.device import resolve_dtype
from nanollm.hf_gpt2 import export_hf_gpt2
from nanollm.loader import read_any_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt-export",
        description="Convert a nanoLLM checkpoint folder, a nanoGPT ckpt.pt or a HuggingFace "
                    "GPT-2 folder into a HuggingFace GPT-2 folder that "
                    "transformers.GPT2LMHeadModel.from_pretrained() loads.",
    )
    parser.add_argument("checkpoint", help="the source: nanoLLM checkpoint folder, HuggingFace "
                        "GPT-2 folder, or nanoGPT ckpt.pt (or a folder holding one)")
    parser.add_argument("out_dir", help="folder to write; written atomically (temp folder, then "
                        "rename)")
    parser.add_argument("--dtype", default="keep",
                        choices=("keep", "float32", "bfloat16", "float16"),
                        help="weight dtype in model.safetensors; 'keep' (default) writes the "
                             "weights in the dtype the source stores")
    parser.add_argument("--force", action="store_true",
                        help="replace out_dir if it already exists (default: refuse)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and not args.force:
        print(f"gpt-export: {out} already exists; pass --force to replace it", file=sys.stderr)
        return 2
    try:
        ckpt, kind = read_any_checkpoint(args.checkpoint)
        dtype = None if args.dtype == "keep" else resolve_dtype(args.dtype, torch.device("cpu"))
        export_hf_gpt2(out, ckpt.state_dict, ckpt.config, tokenizer=ckpt.tokenizer, dtype=dtype)
    except (CheckpointError, ValueError, OSError) as exc:
        # Bad input (a missing or unreadable checkpoint) is exit 2, like every nanoLLM command.
        print(f"gpt-export: {exc}", file=sys.stderr)
        return 2
    c = ckpt.config
    print(f"wrote {out} from {kind} checkpoint {args.checkpoint}: {c.n_layer} layers, "
          f"{c.n_embd} wide, vocab {c.vocab_size}, tokenizer {ckpt.tokenizer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
