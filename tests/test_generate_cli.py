"""gpt-generate run in-process on a tiny checkpoint: output, flags, errors and the REPL."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from nanollm.config import GenerationConfig
from nanollm.generate_cli import SEPARATOR, format_settings, main
from nanollm.loader import ModelLoader
from nanollm.pipeline import InferencePipeline

FLAGS = ["--checkpoint", "--model", "--prompt", "--prompt-file", "--interactive", "--max-tokens",
         "--temperature", "--top-k", "--top-p", "--num-samples", "--seed", "--stop",
         "--repetition-penalty", "--presence-penalty", "--frequency-penalty", "--stop-at-eos",
         "--device", "--dtype", "--threads", "--config", "--no-echo", "--quiet"]


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


CPUS = os.cpu_count()
NOT_UTF8_HINT = "; use a UTF-8 locale, or put the prompt in a UTF-8 file and pass --prompt-file"


@pytest.mark.parametrize("argv, message", [
    (["--threads", "100000"],  # torch.set_num_threads(100000) is a segfault
     f"--threads must be between 1 and {CPUS} (the CPUs on this machine), got 100000"),
    (["--threads", "0"], f"--threads must be between 1 and {CPUS} (the CPUs on this machine), "
                         "got 0"),
    (["--device", "tpu"], "unknown device 'tpu'; choose 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    # b"caf\xe9" (Latin-1) as Python hands it over in sys.argv
    (["--prompt", os.fsdecode(b"caf\xe9")],
     "--prompt is not UTF-8 text (byte 0xe9 at character 3)" + NOT_UTF8_HINT),
    (["--stop", os.fsdecode(b"\xff")],
     "--stop is not UTF-8 text (byte 0xff at character 0)" + NOT_UTF8_HINT),
    (["--compile"], "--compile is not supported for generation: torch.compile wraps the model's "
                    "training forward(), which generation never calls; it applies to training "
                    "(gpt-train --compile)"),
])
def test_refused_before_loading_with_exact_message(
        tiny_checkpoint: Path, argv: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tiny_checkpoint), "--max-tokens", "2", *argv]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"gpt-generate: error: {message}\n")


def test_prompt_file_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--prompt-file", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"gpt-generate: error: prompt file {tmp_path} is a folder; give a text file\n")


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


@pytest.mark.parametrize("line, is_command", [
    ("set temperature 0", True),
    ("set max-tokens 5", True),
    ("set", True),  # prints the usage line
    ("set temprature 0", True),  # misspelt: an error, never a prompt
    ("set top 5", True),  # abbreviation of top_k / top_p
    ("set seeds 1", True),
    ("set frequency_penalt 1", True),
    ("set the table", False),
    ("set to music", False),
    ("set sail at dawn", False),
    ("settle down", False),
])
def test_repl_tells_set_commands_from_prompts(line: str, is_command: bool) -> None:
    from nanollm.generate_cli import is_set_command

    assert is_set_command(line.split(maxsplit=2)) == is_command


def test_repl_misspelt_setting_is_an_error_naming_the_settings(
        tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = os.fsdecode(b"caf\xe9")  # a Latin-1 terminal line, as Python reads it
    monkeypatch.setattr("sys.stdin", io.StringIO(f"set temprature 0\n{line}\nshow\n"))
    assert main(["--checkpoint", str(tiny_checkpoint), "--interactive", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "error: unknown setting 'temprature' (did you mean temperature?); the settings are "
        "max_tokens, temperature, top_k, top_p, repetition_penalty, presence_penalty, "
        "frequency_penalty, seed, stop, num_samples, stop_at_eos",
        "error: the line is not UTF-8 text (byte 0xe9 at character 3); type UTF-8 text",
    ]
    # `show` prints the defaults unchanged, and nothing was generated (the last "\n": EOF)
    assert out == format_settings(GenerationConfig()) + "\n\n"
