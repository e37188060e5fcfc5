"""Every `gpt-train`, `gpt-generate` and `gpt-export` command shown in README.md and docs/*.md
runs, so the documentation stays true.

Commands come from fenced `bash`/`sh`/`shell` blocks (continuation lines joined, `# comments`
dropped) and from `console` blocks, where a `$ ` line is a command and the lines under it are its
exact output (stderr for an error). Each document runs in its own temporary folder holding what
its commands name: the package with its corpus and config/ (linked), a tiny HuggingFace GPT-2 at
models/gpt2 (standing in for the 124M one), data.txt/input.txt, a checkpoint at out/ckpt, ...
Training commands run first, in the document's order (later commands use their runs), then the
others. They run in process, through the `main` of each console script, with flags appended that
make them short (later flags win): 2 training steps, one eval batch, block 64, 8 new tokens.
Commands that cannot run here are in SKIPPED, each with the reason.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.model import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("gpt-train", "gpt-generate", "gpt-export")
# Launchers of several processes: trainer.launch runs (as a subprocess); torchrun lines must be
# listed below.
LAUNCH = "python -m trainer.launch"
LAUNCHERS = ("torchrun", LAUNCH)

# Commands not run here, by their first words as written (continuation lines joined).
SKIPPED = {
    # Four CPU ranks of a 30M-parameter model take minutes on this 2-core machine (the 2-rank
    # trainer.launch example in docs/training.md runs).
    "python -m trainer.launch --standalone --nproc_per_node=4": "4 ranks: too slow here",
    # 8 GPUs and GPT-2 124M; and the same on two nodes (a rendezvous endpoint, shell variables).
    "torchrun --standalone --nproc_per_node=8": "needs 8 CUDA GPUs",
    "torchrun --nnodes=2": "needs two machines",
    # A placeholder (`--config ...`), not a command; tests/test_trainer_ddp.py runs 2 gloo ranks.
    "torchrun --standalone --nproc_per_node=2 -m trainer.cli --device cpu --config ...":
        "a placeholder",
}

TRAIN_FAST = ["--eval-iters", "1", "--num-threads", "1", "--no-progress"]
NEW_RUN_FAST = ["--batch-size", "2", "--block-size", "64"]  # a resumed run keeps its own
GENERATE_FAST = ["--max-tokens", "8"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass
class Command:
    source: str  # "docs/training.md:12"
    text: str  # as written, continuation lines joined
    argv: list[str]
    expected: list[str] | None = None  # console blocks: the output shown under the command

    @property
    def program(self) -> str:
        """gpt-train, gpt-generate, gpt-export, or a launcher of gpt-train's ranks."""
        return "launch" if self.text.startswith(LAUNCH) else self.argv[0]


def _lines(body: str) -> list[tuple[int, str]]:
    """(line offset, logical line): backslash-continued lines joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for i, line in enumerate(body.splitlines()):
        if not pending:
            start = i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _is_command(text: str) -> bool:
    return text.startswith(PROGRAMS) or text.startswith(LAUNCHERS)


def extract(doc: Path) -> list[Command]:
    text = doc.read_text(encoding="utf-8")
    name = doc.relative_to(ROOT).as_posix()
    found: list[Command] = []
    for block in FENCE.finditer(text):
        lang, body = block.group(1), block.group(2)
        first = text.count("\n", 0, block.start(2)) + 1
        if lang in ("bash", "sh", "shell"):
            for offset, line in _lines(body):
                stripped = " ".join(shlex.split(line, comments=True))
                if _is_command(line.strip()):
                    found.append(Command(f"{name}:{first + offset}", stripped,
                                         shlex.split(line, comments=True)))
        elif lang == "console":
            for offset, line in _lines(body):
                if line.startswith("$ ") and _is_command(line[2:]):
                    found.append(Command(f"{name}:{first + offset}", line[2:],
                                         shlex.split(line[2:], comments=True), expected=[]))
                elif found and found[-1].expected is not None and not line.startswith("$ "):
                    found[-1].expected.append(line)
    return found


def skip_reason(command: Command) -> str | None:
    for prefix, reason in SKIPPED.items():
        if command.text.startswith(prefix):
            return reason
    if command.text.startswith("torchrun"):
        raise AssertionError(f"{command.source}: a torchrun command not in SKIPPED (show it "
                             f"with `{LAUNCH}` to have it run here): {command.text}")
    return None


# ----------------------------------------------------------------------------------------------
# the folder a document's commands run in


def _tiny_hf_gpt2(folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=1024,
                                     vocab_size=50257)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)


def _checkpoint(folder: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=257,
                         tokenizer="byte")
    save_checkpoint(folder, GPT(config).state_dict(), config, tokenizer="byte")


def _nanogpt_ckpt(path: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=50257)
    args = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size",
                                            "vocab_size", "bias", "dropout")}
    torch.save({"model": GPT(config).state_dict(), "model_args": args}, path)


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "gpt2"
    _tiny_hf_gpt2(folder)
    return folder


def make_workspace(root: Path, commands: list[Command], hf_gpt2: Path) -> None:
    """What the commands name, and only that (an out/ folder present would change what a new
    run in out/ does)."""
    used = " ".join(c.text for c in commands)
    # the package itself, as in a checkout: commands name its corpus, and a `nanollm/` folder
    # holding only the corpus would shadow the package for `python -m` (cwd comes first)
    (root / "nanollm").symlink_to(ROOT / "nanollm")
    (root / "config").symlink_to(ROOT / "config")
    (root / "models").mkdir()
    (root / "models" / "gpt2").symlink_to(hf_gpt2)
    text = (ROOT / "nanollm" / "assets" / "corpus" / "shakespeare.txt").read_bytes()[:60_000]
    for name in ("data.txt", "input.txt"):
        (root / name).write_bytes(text)
    (root / "prompt.txt").write_text("ROMEO:")
    (root / "gen.yaml").write_text("temperature: 0.8\ntop_k: 20\n")
    for name, make in (("out/ckpt", _checkpoint), ("out/latest", _checkpoint),
                       ("ckpt.pt", _nanogpt_ckpt)):
        if re.search(rf"(^|\s){re.escape(name)}(\s|/|$)", used):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            make(root / name)


# ----------------------------------------------------------------------------------------------
# running


def _mains() -> dict[str, Callable[[list[str]], int]]:
    from nanollm.export_cli import main as export_main
    from nanollm.generate_cli import main as generate_main
    from trainer.cli import main as train_main

    return {"gpt-train": train_main, "gpt-generate": generate_main, "gpt-export": export_main}


def shortened(command: Command) -> list[str]:
    args = command.argv[1:]
    if command.expected is not None:  # an example of an error: exactly as written
        return args
    if command.program in ("gpt-train", "launch"):  # a launcher's last part is gpt-train's
        at = args.index("--init-from") + 1 if "--init-from" in args else None
        if at is not None and args[at:at + 1] == ["resume"]:
            return [*args, *TRAIN_FAST, "--max-iters", "4"]  # two steps past the first run's
        return [*args, *TRAIN_FAST, "--max-iters", "2", *NEW_RUN_FAST]
    if command.program == "gpt-generate":
        return [*args, *GENERATE_FAST]
    return args


def launch(command: Command) -> int:
    """A `python -m trainer.launch ...` line: its own processes, as a user's shell starts them."""
    argv = [sys.executable, *shortened(command)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    sys.stderr.write(proc.stdout + proc.stderr)
    return proc.returncode


def run(command: Command, mains: dict[str, Callable[[list[str]], int]]) -> int:
    if command.program == "launch":
        return launch(command)
    try:
        return mains[command.program](shortened(command))
    except SystemExit as exc:  # argparse
        return exc.code if isinstance(exc.code, int) else 2


# Only the documents that show a command this test can run (the others have nothing to check).
RUNNABLE_DOCS = [d for d in DOCS if any(skip_reason(c) is None for c in extract(d))]


@pytest.mark.parametrize("doc", RUNNABLE_DOCS,
                         ids=[d.relative_to(ROOT).as_posix() for d in RUNNABLE_DOCS])
def test_documented_commands_run(doc: Path, hf_gpt2: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    commands = [c for c in extract(doc) if skip_reason(c) is None]
    make_workspace(tmp_path, commands, hf_gpt2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NANOLLM_MODELS_DIR", str(tmp_path / "no_models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no_hf_home"))
    # the tiny models/gpt2 stands for GPT-2 124M when a command names the preset `gpt2`
    monkeypatch.setitem(ModelConfig.PRESETS, "gpt2", dict(n_layer=2, n_head=2, n_embd=32))
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\nquit\n"))  # for --interactive
    mains = _mains()
    order = sorted(commands, key=lambda c: c.program not in ("gpt-train", "launch"))  # stable
    for command in order:
        capsys.readouterr()
        code = run(command, mains)
        _, err = capsys.readouterr()
        if command.expected is not None and command.expected:
            assert code == 2, f"{command.source}: {command.text} -> exit {code}\n{err}"
            assert err.strip().splitlines() == command.expected, command.source
        else:
            assert code == 0, f"{command.source}: {command.text} -> exit {code}\n{err[-2000:]}"


def test_every_skipped_command_is_still_in_the_docs() -> None:
    shown = [c.text for doc in DOCS for c in extract(doc)]
    for prefix in SKIPPED:
        assert any(text.startswith(prefix) for text in shown), f"not in the docs: {prefix}"
