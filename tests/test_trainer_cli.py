"""gpt-train: flags over files, errors before any work (exit 2), graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanollm.checkpoint import load_checkpoint
from trainer.cli import build_parser, main, overrides_from_args
from trainer.events import read_events

ROOT = Path(__file__).resolve().parent.parent


def _tiny_flags(data: Path, out: Path) -> list[str]:
    return ["--data-path", str(data), "--out-dir", str(out), "--n-layer", "1", "--n-head", "2",
            "--n-embd", "32", "--block-size", "32", "--batch-size", "2", "--device", "cpu",
            "--dtype", "float32", "--eval-iters", "1", "--no-progress"]


def test_help_explains_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--model-size", "--n-layer", "--data-path", "--init-from",
                 "--gradient-accumulation-steps", "--lr-decay-iters", "--grad-clip",
                 "--compile", "--wandb-log", "--fsdp", "--dtype"):
        assert flag in text


def test_file_values_survive_unless_a_flag_is_given(tmp_path: Path) -> None:
    from trainer.run_config import resolve_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("max_iters: 77\nbatch_size: 5\nmodel:\n  n_layer: 3\n  dropout: 0.2\n")
    args = build_parser().parse_args(["--config", str(cfg_file), "--batch-size", "9",
                                      "--model-size", "gpt2", "--n-embd", "96"])
    cfg = resolve_config(args.config, overrides_from_args(args))
    assert (cfg.max_iters, cfg.batch_size, cfg.model.dropout) == (77, 9, 0.2)
    # --model-size is a flag, so it beats the file; an explicit shape flag beats --model-size
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (12, 12, 96)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-head", "5"], "n_embd (32) must be divisible by ModelConfig.n_head (5)"),
        (["--learning-rate", "1e-5", "--min-lr", "1e-3"], "min_lr"),
        (["--dtype", "float16"], "float16' needs CUDA"),
        (["--fsdp"], "fsdp needs CUDA"),
        (["--init-from", "no/such/ckpt"], "no such checkpoint path"),
        (["--init-from", "resume"], "no checkpoint at"),
        (["--wandb-log"], "wandb is not installed"),
        (["--eval-interval", "0"], "TrainingConfig.eval_interval = 0 is out of range"),
    ],
)
def test_bad_config_fails_before_work(flags: list[str], message: str, byte_dataset: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(_tiny_flags(byte_dataset, out) + flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("gpt-train: error:")
    assert not out.exists()  # nothing was started


def test_missing_dataset_fails_in_one_line_with_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *_tiny_flags(tmp_path / "missing.txt", out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"gpt-train: error: data_path '{tmp_path / 'missing.txt'}' "
                                   "does not exist")
    assert "Traceback" not in proc.stderr and not out.exists()


def test_missing_gpt2_weights_name_what_to_download(byte_dataset: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NANOLLM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    assert main([*_tiny_flags(byte_dataset, tmp_path / "run"), "--init-from", "gpt2"]) == 2
    assert "huggingface-cli download gpt2" in capsys.readouterr().err


def test_sigterm_saves_a_loadable_latest_and_exits_cleanly(byte_dataset: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.cli", *_tiny_flags(byte_dataset, out),
           "--max-iters", "1000000", "--eval-interval", "1000000", "--log-interval", "1",
           "--num-threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # events are flushed per line: tail them
            if (out / "events.jsonl").exists() and any(
                    e["type"] == "step" for e in read_events(out)):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    end = read_events(out)[-1]
    assert end["type"] == "end" and end["interrupted"] is True and end["signal"] == "SIGTERM"
    ckpt = load_checkpoint(out / "latest", with_trainer_state=True)
    assert ckpt.trainer_state is not None and ckpt.trainer_state["step"] == end["step"] >= 1


def test_unknown_tokenizer_fails_before_any_folder_is_made(
        byte_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the default data_dir ("data") would be made here
    (tmp_path / "t.yaml").write_text("model:\n  tokenizer: foo\n")
    corpus = ROOT / "nanollm" / "assets" / "corpus" / "shakespeare.txt"
    assert main(["--config", "t.yaml", "--data-path", str(corpus), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error: ModelConfig.tokenizer") and "'foo'" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]  # no out/, no data/


def test_preflight_checks_the_tokenizer_of_a_changed_config(tiny_train_config) -> None:
    from nanollm.config import ConfigError
    from trainer import train

    cfg = tiny_train_config()
    cfg.model.tokenizer = "foo"  # set after construction, so ModelConfig never validated it
    with pytest.raises(ConfigError, match=r"tokenizer.*'foo'"):
        train(cfg)
    assert not Path(cfg.out_dir).exists()


def test_a_split_that_cannot_apply_is_named(byte_dataset: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # a prepared dataset keeps the split it was made with; the flag is not silently dropped
    out = tmp_path / "run"
    assert main([*_tiny_flags(byte_dataset, out), "--max-iters", "1",
                 "--train-val-split", "0.2"]) == 0
    assert (f"note: {byte_dataset} is a prepared dataset, split 0.1 when it was made; "
            "train_val_split 0.2 does not apply (give the raw text as --data-path to split it "
            "anew)") in capsys.readouterr().out
    assert "train_val_split 0.2 does not apply" in (out / "train.log").read_text()
