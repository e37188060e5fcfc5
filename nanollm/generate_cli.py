"""gpt-generate: sample text from a nanoLLM checkpoint, a GPT-2 preset or the shipped demo model.

    gpt-generate --prompt "ROMEO:" --max-tokens 200           # the shipped demo model
    gpt-generate --checkpoint out/ckpt --prompt-file prompt.txt --temperature 0.7 --top-k 50
    gpt-generate --model gpt2 --prompt "Hello" --num-samples 3 --seed 1 --stop "\\n\\n"
    gpt-generate --checkpoint out/ckpt --interactive          # REPL: `set temperature 0`, `show`
    gpt-generate --config gen.yaml --temperature 0.5          # flags override the file

Text streams to stdout as it is generated; with --num-samples > 1 the samples are generated as
one batch and printed one after another, separated by a line of dashes. A short line with token
count, speed, finish reason and seed goes to stderr (--quiet hides it). Bad flags, values or files
give a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from nanollm.config import ConfigError, GenerationConfig
from nanollm.config_io import add_config_flags, build_config, flag_overrides

PROG = "gpt-generate"
SEPARATOR = "-" * 40
# Flag spellings that differ from GenerationConfig field names (OpenAI's names).
RENAMED = {"max_new_tokens": "max_tokens", "stop_sequences": "stop"}
# Fields that make no sense on a terminal: the CLI always streams and prints no logprobs.
NOT_FLAGS = ("stream", "logprobs", "top_logprobs")

REPL_HELP = """\
Type a prompt and press Enter to generate its continuation. Commands:
  set <name> <value>  change a setting, e.g. `set temperature 0`, `set top_k 50`,
                      `set seed 1` (`set seed none`: random), `set stop END` (adds a stop
                      sequence; `set stop none` clears them), `set stop_at_eos false`.
                      A line starting with `set` whose next word is neither a setting nor
                      close to one (`set the table`) is a prompt; a misspelt setting is an error
  show                print the current settings
  help                print this text
  quit, exit          leave (Ctrl-D too; Ctrl-C stops a generation)"""


class UsageError(Exception):
    """A bad command line or setting; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Generate text with a GPT-2-family model. With neither --checkpoint nor "
                    "--model, the demo model shipped with nanoLLM is used.",
        epilog="interactive mode:\n" + REPL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("model").add_mutually_exclusive_group()
    source.add_argument("--checkpoint", metavar="PATH",
                        help="nanoLLM checkpoint folder, HuggingFace GPT-2 folder or nanoGPT "
                             "ckpt.pt")
    source.add_argument("--model", metavar="NAME",
                        help="GPT-2 preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl) found in a "
                             "local models folder or HuggingFace cache")
    system = parser.add_argument_group("system")
    system.add_argument("--device", default="auto",
                        help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' "
                             "(default: auto)")
    system.add_argument("--dtype", default="auto",
                        choices=("auto", "float32", "bfloat16", "float16"),
                        help="weights dtype; auto = bfloat16 on a capable GPU, else float32 "
                             "(default: auto)")
    # Refused with a message (see check_args); hidden because it never works here.
    system.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    system.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch, 1 to the number of CPUs (default: 1 for "
                             "models under 20M parameters, where more threads only add "
                             "overhead; else all cores)")

    prompt = parser.add_argument_group("prompt").add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT",
                        help="text to continue (default: empty: start from end-of-text)")
    prompt.add_argument("--prompt-file", metavar="PATH", help="read the prompt from a UTF-8 file")
    prompt.add_argument("--interactive", action="store_true",
                        help="read prompts and `set`/`show`/`help`/`quit` commands from stdin")

    gen = parser.add_argument_group(
        "generation", "Override the --config file only when given. --stop may be repeated and "
                      "understands \\n and \\t.")
    gen.add_argument("--config", metavar="PATH",
                     help="generation settings file (YAML or JSON, GenerationConfig fields)")
    add_config_flags(gen, GenerationConfig, skip=NOT_FLAGS, rename=RENAMED)

    out = parser.add_argument_group("output")
    out.add_argument("--no-echo", dest="echo", action="store_false",
                     help="print only the continuation, not the prompt before it")
    out.add_argument("--quiet", action="store_true",
                     help="no notes or per-sample statistics on stderr")
    return parser


def unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` typed on a command line become newline, tab and backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m[1]], text)


def note(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# setup


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    overrides = flag_overrides(args, GenerationConfig)
    if "stop_sequences" in overrides:
        overrides["stop_sequences"] = [unescape(s) for s in overrides["stop_sequences"]]
    return build_config(GenerationConfig, args.config, overrides)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is None:
        return args.prompt or ""
    path = Path(args.prompt_file)
    if path.is_dir():
        raise UsageError(f"prompt file {path} is a folder; give a text file")
    if not path.is_file():
        raise UsageError(f"prompt file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"prompt file {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from exc
    except OSError as exc:  # unreadable: permissions, a FIFO that fails, ...
        raise UsageError(f"prompt file {path} cannot be read: {exc.strerror or exc}") from exc


def check_args(args: argparse.Namespace, config: GenerationConfig) -> None:
    """Refuse what would fail only after the model is loaded (or crash torch) up front."""
    from nanollm.cli_paths import run_folder_hint
    from nanollm.device import check_threads, resolve_device
    from nanollm.tokenizer import require_utf8

    if args.compile:
        raise UsageError("--compile is not supported for generation: torch.compile wraps the "
                         "model's training forward(), which generation never calls; it applies "
                         "to training (gpt-train --compile)")
    if args.threads is not None:
        check_threads(args.threads, "--threads")
    resolve_device(args.device)
    hint = run_folder_hint(args.checkpoint) if args.checkpoint else None
    if hint:
        raise UsageError(hint)
    try:
        if args.prompt is not None:
            require_utf8(args.prompt, "--prompt")
        for stop in config.stop_sequences:
            require_utf8(stop, "--stop")
    except ValueError as exc:  # argv bytes that are not UTF-8: a non-UTF-8 locale or script
        raise UsageError(f"{exc}; use a UTF-8 locale, or put the prompt in a UTF-8 file and "
                         "pass --prompt-file") from None


def load_pipeline(args: argparse.Namespace) -> Any:
    """An InferencePipeline holding the asked-for model (imports torch, hence local)."""
    import torch

    from nanollm.device import inference_threads
    from nanollm.loader import ModelLoader
    from nanollm.pipeline import InferencePipeline

    pipe = InferencePipeline(device=args.device, dtype=args.dtype)
    checkpoint = args.checkpoint
    if checkpoint is None and args.model is None:
        demo = ModelLoader.default_checkpoint()
        if not demo.exists():
            raise UsageError(f"no --checkpoint or --model given, and the shipped demo model "
                             f"({demo}) is missing; pass --checkpoint PATH or --model NAME")
        note(f"{PROG}: no --checkpoint or --model given; using the shipped demo model {demo}",
             args.quiet)
        checkpoint = str(demo)
    pipe.load_model(checkpoint_path=checkpoint, model_type=args.model)
    if next(pipe.model.parameters()).device.type == "cpu":
        torch.set_num_threads(inference_threads(pipe.model.get_num_params(), args.threads))
    return pipe


# ----------------------------------------------------------------------------------------------
# generation


def run_prompt(pipe: Any, prompt: str, config: GenerationConfig, *, echo: bool, quiet: bool,
               out: TextIO) -> None:
    """Generate for one prompt: stream one sample, or print a batch of samples."""
    start = time.perf_counter()
    if config.num_samples == 1:
        if echo:
            out.write(prompt)
        stream = pipe.stream(prompt, config)
        for piece in stream:
            out.write(piece)
            out.flush()
        out.write("\n")
        completions = [stream.completion]
    else:
        completions = pipe.generate_detailed(prompt, config)
        for i, completion in enumerate(completions):
            if i:
                out.write(SEPARATOR + "\n")
            out.write((prompt if echo else "") + completion.text + "\n")
    out.flush()
    elapsed = time.perf_counter() - start
    tokens = sum(c.completion_tokens for c in completions)
    reasons = ",".join(sorted({c.finish_reason for c in completions}))
    seed = completions[0].seed
    note(f"[{tokens} tokens in {elapsed:.2f} s ({tokens / max(elapsed, 1e-9):.1f} tokens/s), "
         f"finish: {reasons}, seed: {seed}]", quiet)


# ----------------------------------------------------------------------------------------------
# interactive mode


def _settable() -> dict[str, Any]:
    """Setting name -> its type hint, for every GenerationConfig field the REPL may change."""
    hints = typing.get_type_hints(GenerationConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(GenerationConfig)
            if f.name not in NOT_FLAGS}


def _parse_value(field: str, hint: Any, text: str, config: GenerationConfig) -> Any:
    lowered = text.strip().lower()
    if field == "stop_sequences":
        return [] if lowered == "none" else [*config.stop_sequences, unescape(text)]
    if field == "seed" and lowered in ("none", "random"):
        return None
    if hint is bool:
        if lowered in ("true", "on", "yes", "1"):
            return True
        if lowered in ("false", "off", "no", "0"):
            return False
        raise ValueError(f"{text!r} is not true/false")
    number = float if "float" in str(hint) else int
    try:
        return number(text)
    except ValueError:
        raise ValueError(f"{field} expects {'a number' if number is float else 'an integer'}, "
                         f"got {text!r}") from None


def setting_field(name: str) -> str:
    """A setting's field name from what the user typed (flag spelling or field name)."""
    field = name.replace("-", "_")
    return {v: k for k, v in RENAMED.items()}.get(field, field)


def _setting_names() -> list[str]:
    """Every spelling `set` accepts: field names and their flag names."""
    fields = list(_settable())
    return list(dict.fromkeys([*fields, *(RENAMED.get(f, f) for f in fields)]))


def _near_settings(word: str) -> list[str]:
    """Settings `word` may be a misspelling or an abbreviation of (3 letters or more)."""
    word = word.lower().replace("-", "_")
    names = _setting_names()
    prefixed = [n for n in names if len(word) >= 3 and n.startswith(word)]
    return prefixed or difflib.get_close_matches(word, names, n=3, cutoff=0.75)


def is_set_command(words: list[str]) -> bool:
    """`set`, or `set <word> ...` where the word is a setting or close to one (a misspelt
    setting must be an error, not text sent to the model); "set the table" is a prompt."""
    if words[0] != "set":
        return False
    if len(words) == 1:
        return True
    name = words[1]
    return setting_field(name) in _settable() or "_" in name or bool(_near_settings(name))


def apply_setting(config: GenerationConfig, name: str, value: str) -> GenerationConfig:
    """`set <name> <value>`: a validated copy of config (names as flags or field names)."""
    field = setting_field(name)
    settable = _settable()
    if field not in settable:
        near = _near_settings(name)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        names = ", ".join(RENAMED.get(f, f) for f in settable)
        raise ValueError(f"unknown setting {name!r}{hint}; the settings are {names}")
    return config.replace(**{field: _parse_value(field, settable[field], value, config)})


def format_settings(config: GenerationConfig) -> str:
    return "\n".join(f"  {RENAMED.get(f, f):<20} {getattr(config, f)!r}" for f in _settable())


def repl(pipe: Any, config: GenerationConfig, *, quiet: bool, out: TextIO) -> int:
    from nanollm.tokenizer import require_utf8

    note(f"{PROG}: interactive mode; type a prompt, `help` for commands, `quit` to leave", quiet)
    marker = "> " if sys.stdin.isatty() else ""  # no prompt marker in piped output
    while True:
        try:
            line = input(marker)
        except EOFError:
            out.write("\n")
            return 0
        command = line.strip()
        words = command.split(maxsplit=2)
        if not command:
            continue
        try:
            require_utf8(line, "the line")
        except ValueError as exc:
            print(f"error: {exc}; type UTF-8 text", file=sys.stderr)
            continue
        if command in ("quit", "exit"):
            return 0
        if command == "help":
            out.write(REPL_HELP + "\n")
        elif command == "show":
            out.write(format_settings(config) + "\n")
        elif is_set_command(words):
            if len(words) < 3:
                print("error: usage: set <name> <value>", file=sys.stderr)
                continue
            try:
                config = apply_setting(config, words[1], words[2])
                out.write(f"  {words[1]} = {_current(config, words[1])!r}\n")
            except (ConfigError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
        else:
            try:
                run_prompt(pipe, line, config, echo=False, quiet=quiet, out=out)
            except KeyboardInterrupt:
                out.write("\n[interrupted]\n")
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)


def _current(config: GenerationConfig, name: str) -> Any:
    field = name.replace("-", "_")
    return getattr(config, {v: k for k, v in RENAMED.items()}.get(field, field))


# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpt-generate`; returns the exit code (2 for bad input)."""
    try:
        args = build_parser().parse_args(argv)
        config = generation_config(args)
        check_args(args, config)
        prompt = read_prompt(args)
        pipe = load_pipeline(args)
        if args.interactive:
            return repl(pipe, config, quiet=args.quiet, out=sys.stdout)
        run_prompt(pipe, prompt, config, echo=args.echo, quiet=args.quiet, out=sys.stdout)
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`gpt-generate ... | head`): stop quietly, as cat would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, ConfigError, OSError, ValueError, RuntimeError) as exc:
        # CheckpointError is a RuntimeError; loader errors for missing files are OSErrors.
        # One line, even for messages that list several places (the loader's "not found").
        message = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
