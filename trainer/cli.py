"""gpt-train: train or fine-tune a GPT-2-family model.

    gpt-train --data-path nanollm/assets/corpus/shakespeare.txt --tokenizer byte \\
        --n-layer 4 --n-head 4 --n-embd 256 --block-size 128 --max-iters 2000 --out-dir out/tiny
    gpt-train --config config/train_demo.yaml                 # flags given on the command line win
    gpt-train --init-from resume --out-dir out/tiny           # continue exactly where it stopped
    gpt-train --config config/train_demo.yaml --overwrite     # replace the run in its out_dir
    gpt-train --init-from models/gpt2 --data-path input.txt --learning-rate 3e-5   # fine-tune
    python -m trainer.launch --standalone --nproc_per_node=4 -m trainer.cli --config ...
        # torchrun's arguments; Ctrl-C/SIGTERM then stop every rank cleanly with exit code 0

Precedence: defaults < (on resume: the run's saved settings) < --config file < flags given.
Exit codes: 0 done (also after a graceful stop by SIGTERM/Ctrl-C), 2 bad configuration or input
(nothing was started or written), 1 training failed, 130 stopped before training began.
Guide: docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any

from nanollm.checkpoint import CheckpointError
from nanollm.config import ConfigError, ModelConfig, TrainingConfig
from nanollm.config_io import add_config_flags, flag_overrides
from nanollm.dataset import DataError

PROG = "gpt-train"
# Errors about the user's settings or inputs: reported in one line, exit code 2.
INPUT_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON file of TrainingConfig fields (the model's under "
                             "`model:`)")
    parser.add_argument("--model-size", choices=sorted(ModelConfig.PRESETS),
                        help="model shape of a GPT-2 size for a run from scratch (sets n_layer, "
                             "n_head, n_embd; explicit --n-layer etc. win). To start from "
                             "OpenAI's weights use --init-from gpt2 instead")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --out-dir that holds one, deleting its "
                             "latest/, best/, events.jsonl, train.log and train_config.yaml "
                             "(other files stay) once the new run has loaded; without it such a "
                             "folder is refused")
    add_config_flags(parser.add_argument_group("training"), TrainingConfig)
    add_config_flags(parser.add_argument_group(
        "model (the shape for init_from=scratch; on resume and fine-tune the shape comes from "
        "the checkpoint and shape flags that differ from it are an error, except --dropout and, "
        "when fine-tuning, a smaller --block-size; the vocabulary always comes from the "
        "dataset)"), ModelConfig,
        prefix="model.", skip=("vocab_size",))
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags the user gave, with --model-size expanded under any explicit shape flags."""
    overrides = flag_overrides(args, TrainingConfig)
    if args.model_size:
        model = overrides.setdefault("model", {})
        for key, value in ModelConfig.PRESETS[args.model_size].items():
            model.setdefault(key, value)
    return overrides


def fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError, ValueError):  # stderr may be a closed pipe
        print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _flush_stdout() -> None:
    """Flush now, so a closed pipe cannot fail Python's own flush at exit (exit code 120)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    finally:
        _flush_stdout()


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The trainer modules load after parsing, so --help and flag errors answer quickly.
    from nanollm.cli_paths import run_folder, run_folder_hint
    from trainer.model_init import init_kind
    from trainer.preflight import check_config
    from trainer.run_config import given_model_fields, resolve_config

    try:
        overrides = overrides_from_args(args)
        cfg = resolve_config(args.config, overrides)
        given = given_model_fields(args.config, overrides)
        hint = run_folder_hint(cfg.init_from) if init_kind(cfg.init_from) == "path" else None
        if hint:
            # Continuing a run is --init-from resume; a path here fine-tunes from its weights.
            return fail(f"--init-from {hint}; or continue that run itself with --init-from "
                        f"resume --out-dir {run_folder(cfg.init_from)}", 2)
        check_config(cfg, given, overwrite=args.overwrite)
    except INPUT_ERRORS as exc:
        return fail(str(exc), 2)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from trainer.loop import TrainingError, train

    try:
        train(cfg, given_model_fields=given, overwrite=args.overwrite)
    except INPUT_ERRORS as exc:
        return fail(str(exc), 2)
    except TrainingError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM during setup, or a second one
        return fail(str(exc) or "stopped by Ctrl-C", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
