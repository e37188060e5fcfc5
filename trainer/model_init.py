"""The model a run starts from: `init_from` = scratch, resume, a checkpoint path or a GPT-2 name.

- scratch: cfg.model's shape; vocabulary and tokenizer from the dataset's meta.json (GPT-2's 50257
  padded up to a multiple of 64, 50304, for faster matmuls).
- resume: `<out_dir>/latest` with its trainer state; the run continues exactly.
- a path (nanoLLM folder, HuggingFace GPT-2 folder, nanoGPT ckpt.pt) or gpt2/gpt2-medium/...:
  fine-tuning through ModelLoader; cfg.model.dropout applies, block_size is cropped when a
  smaller one was given, and the dataset must use the checkpoint's tokenizer.
On resume and fine-tune, other shape fields that were given must match the checkpoint
(trainer/model_shape.py). `given` is the set of ModelConfig fields the user set.
Models are returned on CPU in fp32 and in train mode.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nanollm.checkpoint import TRAINER_STATE_FILE, load_checkpoint, read_checkpoint_config
from nanollm.config import ConfigError, ModelConfig, TrainingConfig
from nanollm.dataset import PreparedDataset
from nanollm.hf_gpt2 import hf_config_to_model_config, read_hf_config
from nanollm.loader import ModelLoader, detect_kind, find_pretrained
from nanollm.model import GPT, CausalSelfAttention
from trainer.data_source import canonical_tokenizer
from trainer.model_shape import check_against_checkpoint
from trainer.state import check_trainer_state

LATEST = "latest"
BEST = "best"
PAD_MULTIPLE = 64


@dataclass
class StartPoint:
    model: GPT
    tokenizer: str
    kind: str  # "scratch" | "resume" | "nanollm" | "huggingface" | "nanogpt"
    source: str
    trainer_state: dict[str, Any] | None = None


def init_kind(init_from: str) -> str:
    """'scratch' | 'resume' | 'preset' | 'path'."""
    if init_from in ("scratch", "resume"):
        return init_from
    if init_from in ModelConfig.PRESETS:
        return "preset"
    return "path"


def resume_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.out_dir) / LATEST


def padded_vocab(vocab_size: int, tokenizer: str) -> int:
    if canonical_tokenizer(tokenizer) != "gpt2":
        return vocab_size
    return -(-vocab_size // PAD_MULTIPLE) * PAD_MULTIPLE


def set_dropout(model: GPT, p: float) -> None:
    """Change dropout everywhere in place (checkpoints are usually saved with dropout 0)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, CausalSelfAttention):
            module.dropout = p
    model.config = model.config.replace(dropout=p)


def check_tokenizer(dataset: PreparedDataset, tokenizer: str, vocab_size: int,
                    source: str) -> None:
    if canonical_tokenizer(dataset.tokenizer) != canonical_tokenizer(tokenizer):
        raise ConfigError(
            f"the dataset {dataset.path} was prepared with tokenizer {dataset.tokenizer!r} but "
            f"the model {source} uses {tokenizer!r}; prepare the data with {tokenizer!r} (give "
            "the text file as --data-path) or start from a matching checkpoint")
    if dataset.vocab_size > vocab_size:
        raise ConfigError(f"the dataset {dataset.path} has vocab_size {dataset.vocab_size} but "
                          f"the model {source} has only {vocab_size}")


def check_same_data(dataset: PreparedDataset, saved_sha256: object, source: Path) -> None:
    """A resumed run must see the data it was trained on: the same path can hold new text."""
    sha = dataset.meta.get("sha256")
    if isinstance(saved_sha256, str) and isinstance(sha, str) and sha != saved_sha256:
        raise ConfigError(
            f"the data {dataset.path} is not what the run {source} was trained on (sha256 "
            f"{sha[:12]}… now, {saved_sha256[:12]}… then); a resumed run continues on its own "
            f"data: restore it, or fine-tune on the new data with --init-from {source} "
            "--out-dir NEW")


def resume_model_config(cfg: TrainingConfig) -> tuple[ModelConfig, str]:
    """The model config and tokenizer of `<out_dir>/latest`, read without loading weights."""
    config, meta = read_checkpoint_config(resume_dir(cfg))
    return config, canonical_tokenizer(str(meta.get("tokenizer", config.tokenizer)))


def start_config(cfg: TrainingConfig) -> tuple[ModelConfig, str, str] | None:
    """(model config, tokenizer, source) of the checkpoint a resume or fine-tune starts from,
    read without its weights. None from scratch, and for a nanoGPT ckpt.pt, whose config lives
    inside the weights file (it is checked after loading instead)."""
    kind = init_kind(cfg.init_from)
    if kind == "scratch":
        return None
    if kind == "resume":
        config, tokenizer = resume_model_config(cfg)
        return config, tokenizer, str(resume_dir(cfg))
    path = find_pretrained(cfg.init_from) if kind == "preset" else Path(cfg.init_from).expanduser()
    source = cfg.init_from
    found = detect_kind(path)
    if path.is_file() and found != "nanogpt":
        path = path.parent  # a file inside a checkpoint folder
    if found == "nanollm":
        config, meta = read_checkpoint_config(path)
        return config, canonical_tokenizer(str(meta.get("tokenizer", config.tokenizer))), source
    if found == "huggingface":
        config = hf_config_to_model_config(read_hf_config(path), path)
        return config, canonical_tokenizer(config.tokenizer), source
    return None


def scratch_model(cfg: TrainingConfig, dataset: PreparedDataset) -> StartPoint:
    tokenizer = canonical_tokenizer(dataset.tokenizer)
    mc = cfg.model.replace(vocab_size=padded_vocab(dataset.vocab_size, tokenizer),
                           tokenizer=tokenizer)
    torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
    return StartPoint(GPT(mc), tokenizer, "scratch", "scratch")


def resumed_model(cfg: TrainingConfig, dataset: PreparedDataset,
                  given: Collection[str]) -> StartPoint:
    path = resume_dir(cfg)
    ckpt = load_checkpoint(path, with_trainer_state=True)
    if ckpt.trainer_state is None:
        raise ConfigError(f"{path} holds no trainer_state.pt, so it cannot be resumed; start a "
                          f"new run with --init-from {path}")
    check_against_checkpoint(cfg.model, given, ckpt.config, ckpt.tokenizer, source=str(path),
                             resume=True)
    check_tokenizer(dataset, ckpt.tokenizer, ckpt.config.vocab_size, str(path))
    check_same_data(dataset, ckpt.provenance.get("dataset_sha256"), path)
    check_trainer_state(ckpt.trainer_state, path / TRAINER_STATE_FILE)
    model = GPT(ckpt.config.replace(dropout=cfg.model.dropout))
    model.load_weights({k: v.float() for k, v in ckpt.state_dict.items()})
    return StartPoint(model, canonical_tokenizer(ckpt.tokenizer), "resume", str(path),
                      ckpt.trainer_state)


def load_pretrained(cfg: TrainingConfig, given: Collection[str]) -> StartPoint:
    """Weights of a checkpoint path or GPT-2 name, before the dataset is checked against them."""
    if init_kind(cfg.init_from) == "preset":
        loaded = ModelLoader.load(model_type=cfg.init_from, device="cpu", dtype="float32")
    else:
        loaded = ModelLoader.load(checkpoint_path=cfg.init_from, device="cpu", dtype="float32")
    model = loaded.model
    check_against_checkpoint(cfg.model, given, model.config, loaded.tokenizer.name,
                             source=loaded.source, resume=False)
    set_dropout(model, cfg.model.dropout)
    if "block_size" in given and cfg.model.block_size < model.config.block_size:
        model.crop_block_size(cfg.model.block_size)
    model.train()  # also drops the inference-only lm_head copy
    return StartPoint(model, canonical_tokenizer(loaded.tokenizer.name), loaded.kind,
                      loaded.source)


def finetune_model(start: StartPoint, dataset: PreparedDataset) -> StartPoint:
    check_tokenizer(dataset, start.tokenizer, start.model.config.vocab_size, start.source)
    return start
