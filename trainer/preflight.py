"""Checks that run before any work: a bad setting or a missing input fails in a second, with one
message naming the problem, instead of after minutes of data preparation or model building."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from pathlib import Path

from nanollm.checkpoint import TRAINER_STATE_FILE, is_checkpoint_dir
from nanollm.config import ConfigError, ModelConfig, TrainingConfig
from nanollm.dataset import is_dataset_dir
from nanollm.device import resolve_device, resolve_dtype
from nanollm.text_sources import is_url
from nanollm.tokenizer import load_tokenizer
from trainer.distributed import env_world
from trainer.model_init import init_kind, resume_dir, start_config
from trainer.model_shape import changed_fields, check_against_checkpoint


def check_init_from(cfg: TrainingConfig) -> None:
    kind = init_kind(cfg.init_from)
    if kind == "resume":
        latest = resume_dir(cfg)
        if not is_checkpoint_dir(latest):
            raise ConfigError(f"init_from 'resume': no checkpoint at {latest} (out_dir "
                              f"{cfg.out_dir!r}); start with --init-from scratch or point "
                              "--out-dir at an earlier run")
        if not (latest / TRAINER_STATE_FILE).is_file():
            raise ConfigError(f"init_from 'resume': {latest} has no {TRAINER_STATE_FILE}; use "
                              f"--init-from {latest} to fine-tune from its weights instead")
    elif resume_dir(cfg).exists():  # a new run would mix its events and best/ with the old one
        raise ConfigError(f"out_dir {cfg.out_dir!r} already holds a run ({resume_dir(cfg)}); "
                          "continue it with --init-from resume, or choose another --out-dir")
    if kind == "path" and not Path(cfg.init_from).expanduser().exists():
        raise ConfigError(
            f"TrainingConfig.init_from = {cfg.init_from!r}: no such checkpoint path; use "
            f"'scratch', 'resume', a GPT-2 name ({', '.join(ModelConfig.PRESETS)}) or the path "
            "of a nanoLLM/HuggingFace checkpoint folder or a nanoGPT ckpt.pt")


def check_tokenizer_name(cfg: TrainingConfig) -> None:
    """An unknown tokenizer would otherwise fail only when the data is being prepared."""
    try:
        load_tokenizer(cfg.model.tokenizer)
    except ValueError as exc:
        raise ConfigError(f"ModelConfig.tokenizer: {exc}") from None


def check_model_shape(cfg: TrainingConfig, given: Collection[str]) -> None:
    """Resume and fine-tune: the given shape settings must fit the checkpoint (read without its
    weights; a nanoGPT ckpt.pt is checked when it is loaded)."""
    start = start_config(cfg)
    if start is not None:
        config, tokenizer, source = start
        check_against_checkpoint(cfg.model, given, config, tokenizer, source=source,
                                 resume=init_kind(cfg.init_from) == "resume")


def check_data_path(cfg: TrainingConfig) -> None:
    path = cfg.data_path
    if path is None:
        raise ConfigError("no training data: give --data-path (a text file, a folder of text "
                          "files, an http(s) URL or a prepared dataset folder)")
    if is_url(path):
        return
    if "://" in path:
        raise ConfigError(f"data_path {path!r}: only http:// and https:// URLs are supported")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"data_path {path!r} does not exist")
    if p.is_dir() and (p / "meta.json").is_file() and not is_dataset_dir(p):
        raise ConfigError(f"data_path {path!r} has a meta.json but is not a complete prepared "
                          "dataset (train.bin, val.bin, meta.json); prepare it again")


def check_system(cfg: TrainingConfig) -> None:
    try:
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"TrainingConfig.device/dtype: {exc}") from exc
    if str(dtype) == "torch.float16" and device.type != "cuda":
        raise ConfigError("TrainingConfig.dtype = 'float16' needs CUDA (loss scaling); on CPU "
                          "use 'bfloat16' or 'float32'")
    if cfg.fsdp and device.type != "cuda":
        raise ConfigError("TrainingConfig.fsdp needs CUDA GPUs; on CPU use DDP (the default, "
                          "fsdp: false)")
    if cfg.backend == "nccl" and device.type != "cuda":
        raise ConfigError("TrainingConfig.backend = 'nccl' needs CUDA; use 'gloo' (or 'auto') "
                          "on CPU")
    _, _, world, _ = env_world()
    if cfg.gradient_accumulation_steps % world:
        raise ConfigError(
            f"TrainingConfig.gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) is "
            f"global and must be divisible by the number of ranks ({world})")
    if cfg.wandb_log and importlib.util.find_spec("wandb") is None:
        raise ConfigError("wandb_log is set but wandb is not installed: pip install wandb "
                          "(or pip install 'nanollm-gpt[wandb]'), or drop --wandb-log")


def check_config(cfg: TrainingConfig, given_model_fields: Collection[str] | None = None) -> None:
    """Everything that can be known to fail before touching data or weights.

    `given_model_fields`: the ModelConfig fields the user set (flags and config file); default:
    those that differ from ModelConfig's defaults."""
    cfg.validate()
    cfg.model.validate()  # TrainingConfig.validate does not descend into the nested config
    check_tokenizer_name(cfg)
    check_init_from(cfg)
    given = changed_fields(cfg.model) if given_model_fields is None else given_model_fields
    check_model_shape(cfg, given)
    if init_kind(cfg.init_from) != "resume" or cfg.data_path is not None:
        check_data_path(cfg)
    check_system(cfg)
