"""Resume and fine-tune: shape settings that do not fit the checkpoint fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanollm.config import ConfigError
from trainer.cli import build_parser, main, overrides_from_args
from trainer.events import read_events
from trainer.model_init import load_pretrained
from trainer.preflight import check_config
from trainer.run_config import given_model_fields, resolve_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The base run: 1 layer, 2 heads, 32 wide, block 32, byte tokenizer.
SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]
SYSTEM = ["--device", "cpu", "--dtype", "float32", "--no-progress", "--num-threads", "1"]


@pytest.fixture(scope="module")
def base_run(byte_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shape") / "base"
    assert main(["--data-path", str(byte_dataset), "--out-dir", str(out), *SHAPE, *SYSTEM,
                 "--tokenizer", "byte", "--max-iters", "2", "--eval-interval", "2",
                 "--eval-iters", "1", "--batch-size", "2"]) == 0
    return out


def _resume(base: Path, *flags: str) -> list[str]:
    return ["--init-from", "resume", "--out-dir", str(base), *SYSTEM, *flags]


def _finetune(base: Path, data: Path, out: Path, *flags: str) -> list[str]:
    return ["--init-from", str(base / "latest"), "--data-path", str(data), "--out-dir", str(out),
            *SYSTEM, *flags]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-layer", "3"], "ModelConfig.n_layer = 3 was given but the run being resumed"),
        (["--tokenizer", "gpt2"], "has tokenizer = 'byte'; a resumed run keeps its model"),
        (["--block-size", "16"], "for a shorter context fine-tune from it: --init-from"),
        (["--model-size", "gpt2"], "ModelConfig.n_layer = 12 was given"),
    ],
)
def test_resume_refuses_another_shape(base_run: Path, flags: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    events_before = len(read_events(base_run))
    assert main(_resume(base_run, *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error:") and err.count("\n") == 1, err
    assert message in err
    assert len(read_events(base_run)) == events_before  # the run was not touched


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-layer", "5"], "ModelConfig.n_layer = 5 was given but the checkpoint"),
        # equal to ModelConfig's default, but given: still refused, never silently ignored
        (["--n-layer", "12"], "has n_layer = 1; fine-tuning keeps the checkpoint's shape"),
        (["--tokenizer", "gpt2"], "has tokenizer = 'byte'"),
        (["--block-size", "64"], "block_size = 64 was given but the checkpoint"),
        (["--no-bias"], "ModelConfig.bias = False was given"),
    ],
)
def test_finetune_refuses_another_shape(base_run: Path, byte_dataset: Path, tmp_path: Path,
                                        flags: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tuned"
    assert main(_finetune(base_run, byte_dataset, out, *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error:") and err.count("\n") == 1, err
    assert message in err and "was given" in err
    assert not out.exists()


def test_a_config_file_shape_counts_as_given(base_run: Path, byte_dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "ft.yaml"
    cfg_file.write_text("model:\n  n_embd: 48\n  dropout: 0.1\n")
    out = tmp_path / "tuned"
    assert main(["--config", str(cfg_file), *_finetune(base_run, byte_dataset, out)]) == 2
    err = capsys.readouterr().err
    assert "ModelConfig.n_embd = 48 was given but the checkpoint" in err
    assert "drop --n-embd (and `n_embd:` from the config file)" in err
    assert not out.exists()


def test_matching_shape_dropout_and_a_smaller_block_pass(base_run: Path, byte_dataset: Path,
                                                         tmp_path: Path) -> None:
    def check(argv: list[str]) -> None:
        args = build_parser().parse_args(argv)
        overrides = overrides_from_args(args)
        check_config(resolve_config(args.config, overrides),
                     given_model_fields(args.config, overrides))

    # resume: the same shape given again, and a new dropout
    check(_resume(base_run, *SHAPE, "--tokenizer", "char", "--dropout", "0.2"))
    # fine-tune: dropout and a smaller block apply; 'char' is the byte tokenizer's other name
    check(_finetune(base_run, byte_dataset, tmp_path / "a", "--block-size", "16",
                    "--dropout", "0.1", "--tokenizer", "char"))


def test_loading_checks_too_and_crops_only_a_given_block(tiny_train_config,
                                                         tiny_hf_dir: Path) -> None:
    # the check after loading covers what preflight cannot read cheaply (a nanoGPT ckpt.pt)
    cfg = tiny_train_config(init_from=str(tiny_hf_dir), model={"n_layer": 3})
    with pytest.raises(ConfigError, match="n_layer = 3 was given but the checkpoint"):
        load_pretrained(cfg, {"n_layer"})
    # block_size 32 was not given: the HF model keeps its 64 positions; given: cropped to 32
    assert load_pretrained(cfg, set()).model.config.block_size == 64
    assert load_pretrained(cfg, {"block_size"}).model.config.block_size == 32
