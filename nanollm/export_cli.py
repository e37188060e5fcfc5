"""gpt-export: convert any checkpoint nanoLLM reads into a HuggingFace GPT-2 folder.

    gpt-export out/latest hf-model/                      # nanoLLM checkpoint -> HF folder
    gpt-export out-shakespeare/ckpt.pt hf-model/ --dtype bfloat16
    python -c "from transformers import GPT2LMHeadModel as M; M.from_pretrained('hf-model')"

The folder holds config.json, model.safetensors, generation_config.json and, for the GPT-2
tokenizer, vocab.json + merges.txt + tokenizer_config.json (AutoTokenizer loads them).
`--force` replaces only a folder that gpt-export wrote (or an empty one), never the source, a
folder holding it, or anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from nanollm.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from nanollm.cli_paths import run_folder_hint
from nanollm.device import resolve_dtype
from nanollm.hf_gpt2 import export_hf_gpt2
from nanollm.interrupt import Terminated
from nanollm.loader import read_any_checkpoint

PROG = "gpt-export"
# Everything an export writes; a folder holding anything else is not one of ours.
EXPORT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, "generation_config.json", "vocab.json",
                          "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
# The config.json key every export writes (the tokenizer nanoLLM re-imports it with).
EXPORT_MARK = "nanollm_tokenizer"


class ExportError(Exception):
    """A reason to stop before anything is written; the message is the whole story."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
                        help="replace out_dir if it is a previous gpt-export output or empty "
                             "(default: refuse any existing out_dir); never the source or a "
                             "folder holding it")
    return parser


def is_previous_export(folder: Path) -> bool:
    """True for a folder gpt-export wrote: only export files, a GPT-2 config.json that carries
    nanoLLM's tokenizer key."""
    names = {p.name for p in folder.iterdir()}
    if not names <= EXPORT_FILES or CONFIG_FILE not in names:
        return False
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "gpt2" and EXPORT_MARK in config


def check_out_dir(out: Path, source: Path, force: bool) -> None:
    """Refuse, before reading or writing anything, any out_dir that replacing would destroy
    more than a previous export."""
    if not os.path.lexists(out):
        parent = next(p for p in out.absolute().parents if os.path.lexists(p))
        if not parent.is_dir():
            raise ExportError(f"{parent} is a file, so {out} cannot be created; choose another "
                              "out_dir")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ExportError(f"cannot write {out}: no permission to create files in {parent}")
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it (only a previous "
                          "gpt-export output or an empty folder is replaced)")
    real_out, real_source = out.resolve(), source.resolve()
    if real_out == real_source or real_out in real_source.parents:
        raise ExportError(f"{out} is or holds the source {source}; --force never replaces it. "
                          "Choose another out_dir")
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another out_dir")
    others = sorted(p.name for p in out.iterdir())
    if others and not is_previous_export(out):
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ExportError(f"{out} is not a gpt-export output (it holds {shown}); --force "
                          "replaces only a previous export or an empty folder. Choose another "
                          "out_dir or remove it yourself")


def _describe(exc: BaseException) -> str:
    """An error as one line: CheckpointError already names its file; an OSError gets its
    file name and reason instead of Python's `[Errno N] ...` form."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _missing_parents(out: Path) -> list[Path]:
    """Ancestors of out that do not exist yet, deepest first (the export creates them)."""
    return [p for p in out.absolute().parents if not os.path.lexists(p)]


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops mattering once one is not empty
        try:
            folder.rmdir()
        except OSError:
            return


def export(args: argparse.Namespace) -> str:
    """Read the source and write out_dir; returns the summary line. Raises ExportError."""
    out, source = Path(args.out_dir).expanduser(), Path(args.checkpoint).expanduser()
    check_out_dir(out, source, args.force)
    hint = run_folder_hint(args.checkpoint)
    if hint:
        raise ExportError(hint)
    try:
        ckpt, kind = read_any_checkpoint(source)
    except (CheckpointError, ValueError, OSError) as exc:
        raise ExportError(_describe(exc)) from None
    try:
        dtype = None if args.dtype == "keep" else resolve_dtype(args.dtype, torch.device("cpu"))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    created = _missing_parents(out)
    try:
        export_hf_gpt2(out, ckpt.state_dict, ckpt.config, tokenizer=ckpt.tokenizer, dtype=dtype)
    except (OSError, ValueError) as exc:
        _remove_empty(created)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _describe(exc)
        raise ExportError(f"cannot write {out} (in {out.absolute().parent}): {reason}"
                          ) from None
    except KeyboardInterrupt:
        _remove_empty(created)
        raise
    c = ckpt.config
    return (f"wrote {out} from {kind} checkpoint {source}: {c.n_layer} layers, {c.n_embd} wide, "
            f"vocab {c.vocab_size}, tokenizer {ckpt.tokenizer}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(export(args))
    except ExportError as exc:
        # Bad input or an unwritable out_dir: exit 2, like every nanoLLM command.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM while writing (Terminated)
        print(f"{PROG}: interrupted; {args.out_dir} is as it was", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
