"""Starting points: fine-tuning a nanoLLM or HuggingFace checkpoint, tokenizer rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nanollm.checkpoint import load_checkpoint
from nanollm.config import ConfigError
from nanollm.dataset import open_dataset
from trainer import train
from trainer.events import read_events
from trainer.model_init import padded_vocab

CORPUS = Path(__file__).resolve().parent.parent / "nanollm/assets/corpus/shakespeare.txt"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _first_loss(out_dir: str | Path) -> float:
    return next(e["loss"] for e in read_events(out_dir) if e["type"] == "step")


def test_finetune_a_nanollm_checkpoint_with_new_dropout_and_shorter_block(
        tiny_train_config, tmp_path: Path) -> None:
    base = tiny_train_config(out_dir=str(tmp_path / "base"), max_iters=30, eval_interval=30)
    train(base)
    tuned = tiny_train_config(out_dir=str(tmp_path / "tuned"), init_from=str(tmp_path / "base" /
                              "best"), max_iters=2, eval_interval=2,
                              model={"dropout": 0.1, "block_size": 16})
    train(tuned)
    ckpt = load_checkpoint(tmp_path / "tuned" / "latest", with_trainer_state=True)
    assert ckpt.config.block_size == 16 and ckpt.config.dropout == 0.1
    assert ckpt.state_dict["transformer.wpe.weight"].shape[0] == 16
    assert ckpt.provenance["init_from"].endswith("best")
    assert ckpt.trainer_state is not None and ckpt.trainer_state["step"] == 2  # a new run
    # it starts from the trained weights, far below a random model's ln(257) = 5.55
    assert _first_loss(tmp_path / "tuned") < _first_loss(tmp_path / "base") - 1.0


def test_finetune_refuses_a_dataset_with_another_tokenizer(tiny_train_config,
                                                           tiny_checkpoint: Path) -> None:
    # a gpt2 checkpoint on a byte dataset (asking for the byte tokenizer is refused earlier)
    cfg = tiny_train_config(init_from=str(tiny_checkpoint), model={"tokenizer": "gpt2"})
    with pytest.raises(ConfigError, match="prepared with tokenizer 'byte' but the model"):
        train(cfg)
    assert not Path(cfg.out_dir).exists()  # a run that cannot start writes nothing


def test_finetune_huggingface_folder_on_raw_text(tiny_train_config, tiny_hf_dir: Path,
                                                 tmp_path: Path) -> None:
    text = tmp_path / "small.txt"
    text.write_bytes(CORPUS.read_bytes()[:8000])
    cfg = tiny_train_config(init_from=str(tiny_hf_dir), data_path=str(text),
                            data_dir=str(tmp_path / "data"), max_iters=2, eval_interval=2,
                            model={"block_size": 32, "tokenizer": "gpt2"})
    result = train(cfg)
    assert result.step == 2
    ds = open_dataset(tmp_path / "data" / "small-gpt2")  # prepared with the checkpoint's tokenizer
    assert ds.tokenizer == "gpt2"
    ckpt = load_checkpoint(tmp_path / "run" / "latest")
    assert ckpt.tokenizer == "gpt2" and ckpt.config.vocab_size == 50257
    assert ckpt.config.block_size == 32  # cropped from the HF model's 64
    assert ckpt.provenance["source"] == str(tiny_hf_dir)
    # a scratch run on the same dataset pads GPT-2's vocabulary to a multiple of 64
    train(cfg.replace(init_from="scratch", data_path=str(ds.path), max_iters=1,
                      out_dir=str(tmp_path / "scratch")))
    assert load_checkpoint(tmp_path / "scratch" / "latest").config.vocab_size == 50304
    assert padded_vocab(257, "byte") == 257 and padded_vocab(50257, "gpt2") == 50304
    assert math.isfinite(_first_loss(tmp_path / "scratch"))
