"""gpt-generate run in-process on a tiny checkpoint: output, flags, errors and the REPL."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from nanollm.config import GenerationConfig
from nanollm.generate_cli import SEPARATOR, main
from nanollm.loader import ModelLoader
from nanollm.pipeline import InferencePipeline

FLAGS = ["--checkpoint", "--model", "--prompt", "--prompt-file", "--interactive", "--max-tokens",
         "--temperature", "--top-k", "--top-p", "--num-samples", "--seed", "--stop",
         "--repetition-penalty", "--presence-penalty", "--frequency-penalty", "--stop-at-eos",
         "--device", "--dtype", "--compile", "--config", "--no-echo", "--quiet"]


# Tiny models: one thread avoids stalls when other processes share the two cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected(checkpoint: Path, prompt: str, **config) -> list[str]:
    pipe = InferencePipeline.from_loaded(ModelLoader.load(checkpoint, device="cpu"))
    return [c.text for c in pipe.generate_detailed(prompt, GenerationConfig(**config))]


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpt-generate: error: "), err
    return lines[0]


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert re.search(rf"{flag}\b", out), flag


def test_generates_from_a_checkpoint(tiny_checkpoint: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--checkpoint", str(tiny_checkpoint), "--prompt", "Hello", "--max-tokens", "8",
                 "--temperature", "0", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0
    [want] = expected(tiny_checkpoint, "Hello", max_new_tokens=8, temperature=0.0)
    assert out == "Hello" + want + "\n"
    assert "seed:" in err and "finish:" in err


def test_samples_are_separated_and_flags_override_the_config_file(
        tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "gen.json"
    config_file.write_text(json.dumps({"max_new_tokens": 50, "temperature": 0.9, "top_k": 20}))
    code = main(["--checkpoint", str(tiny_checkpoint), "--config", str(config_file),
                 "--max-tokens", "5", "--num-samples", "2", "--seed", "3", "--no-echo",
                 "--quiet", "--prompt", "Once"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    want = expected(tiny_checkpoint, "Once", max_new_tokens=5, temperature=0.9, top_k=20,
                    num_samples=2, seed=3)
    assert out == f"{want[0]}\n{SEPARATOR}\n{want[1]}\n"


def test_bad_temperature_exits_2_with_one_line(tiny_checkpoint: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tiny_checkpoint), "--temperature", "-1"]) == 2
    assert "temperature" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("argv, words", [
    (["--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "prompt.txt"),
    (["--top-k", "many"], "--top-k"),
    (["--prompt", "a", "--interactive"], "not allowed"),
    (["--config", "/nonexistent/gen.yaml"], "gen.yaml"),
])
def test_bad_input_exits_2(argv: list[str], words: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert words in one_line_error(capsys.readouterr().err)


def test_missing_demo_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ModelLoader, "default_checkpoint", staticmethod(lambda: tmp_path / "no"))
    assert main(["--prompt", "Hi"]) == 2
    assert "demo model" in one_line_error(capsys.readouterr().err)


def test_default_model_is_announced(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ModelLoader, "default_checkpoint", staticmethod(lambda: tiny_checkpoint))
    assert main(["--prompt", "Hi", "--max-tokens", "2"]) == 0
    assert "demo model" in capsys.readouterr().err


def test_interactive_repl(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    script = ("help\nset temperature 0\nset max_tokens 6\nset top_k lots\nshow\n"
              "The king\nquit\nnever read\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert main(["--checkpoint", str(tiny_checkpoint), "--interactive", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    [want] = expected(tiny_checkpoint, "The king", max_new_tokens=6, temperature=0.0, seed=1)
    assert "set <name> <value>" in out  # help
    assert re.search(r"temperature\s+0\.0", out) and re.search(r"max_tokens\s+6", out)  # show
    assert want + "\n" in out
    assert "top_k expects an integer" in err
    assert "never read" not in out


def test_interactive_ends_at_eof(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("set stop \\n\nset seed none\nshow\n"))
    assert main(["--checkpoint", str(tiny_checkpoint), "--interactive", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"stop\s+\['\\n'\]", out) and re.search(r"seed\s+None", out)


def test_repl_treats_set_without_a_setting_as_a_prompt() -> None:
    from nanollm.generate_cli import is_set_command

    assert is_set_command(["set", "temperature", "0"])
    assert is_set_command(["set", "max-tokens", "5"])
    assert is_set_command(["set"])  # prints the usage line
    assert not is_set_command(["set", "the", "table"])
