"""Checks that run before any work: a bad setting or a missing input fails in a second, with one
message naming the problem, instead of after minutes of data preparation or model building."""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from pathlib import Path

from nanollm.checkpoint import TRAINER_STATE_FILE, is_checkpoint_dir, read_checkpoint_config
from nanollm.config import ConfigError, ModelConfig, TrainingConfig
from nanollm.dataset import is_dataset_dir, read_meta
from nanollm.device import resolve_device, resolve_dtype
from nanollm.text_sources import is_url
from nanollm.tokenizer import load_tokenizer
from trainer.data_source import canonical_tokenizer, needs_preparation
from trainer.distributed import cpu_count, env_world
from trainer.model_init import init_kind, padded_vocab, resume_dir, start_config
from trainer.model_shape import changed_fields, check_against_checkpoint
from trainer.run_config import saved_train_config
from trainer.run_dir import check_out_dir, check_writable_folder

# More torch threads per rank than this many per core is a mistake, not a setting.
THREADS_PER_CORE = 4


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


def check_data_dir(cfg: TrainingConfig) -> None:
    """Raw input is prepared into data_dir, which must be a folder this process can write."""
    if cfg.data_path is not None and needs_preparation(cfg.data_path):
        check_writable_folder(cfg.data_dir, "data_dir")


def check_scratch_vocabulary(cfg: TrainingConfig, given: Collection[str]) -> None:
    """From scratch the tokenizer and vocabulary come from the data: a prepared dataset fixes
    both, raw text is tokenized with the model's tokenizer. A given value that the data would
    overrule is an error, not silently replaced."""
    if init_kind(cfg.init_from) != "scratch" or cfg.data_path is None:
        return
    requested = canonical_tokenizer(cfg.model.tokenizer)
    if needs_preparation(cfg.data_path):
        tokenizer, vocab = requested, load_tokenizer(requested).vocab_size
    else:
        meta = read_meta(Path(cfg.data_path).expanduser())
        tokenizer, vocab = canonical_tokenizer(str(meta["tokenizer"])), int(meta["vocab_size"])
        if "tokenizer" in given and requested != tokenizer:
            raise ConfigError(
                f"ModelConfig.tokenizer = {cfg.model.tokenizer!r} was given but the prepared "
                f"dataset {cfg.data_path} was tokenized with {tokenizer!r}; drop --tokenizer (a "
                "prepared dataset decides it), or give the raw text as --data-path to prepare "
                f"it with {cfg.model.tokenizer!r}")
    padded = padded_vocab(vocab, tokenizer)
    if "vocab_size" in given and cfg.model.vocab_size != padded:
        raise ConfigError(
            f"ModelConfig.vocab_size = {cfg.model.vocab_size} was given but the vocabulary comes "
            f"from the data: {vocab} tokens ({tokenizer}), {padded} rows in the model; drop "
            "`vocab_size:` from the config file")


def check_resume_data(cfg: TrainingConfig) -> None:
    """A resumed run continues on its own data: its data position and best val loss mean
    nothing on other data. The same file by another path, or its prepared dataset folder
    (whose hash matches the run's), is accepted."""
    if init_kind(cfg.init_from) != "resume" or cfg.data_path is None:
        return
    latest = resume_dir(cfg)
    saved = (saved_train_config(latest) or {}).get("data_path")
    if not isinstance(saved, str) or _same_data(saved, cfg.data_path, latest):
        return
    raise ConfigError(
        f"data_path {cfg.data_path!r} is not the data of the run being resumed ({saved!r}); a "
        "resumed run continues on its own data (its data position and best val loss belong to "
        f"it): drop --data-path, or fine-tune from the run on the new data with --init-from "
        f"{latest} --out-dir NEW")


def _same_data(saved: str, given: str, latest: Path) -> bool:
    if saved == given:
        return True
    if is_url(saved) or is_url(given):
        return False
    a, b = Path(saved).expanduser(), Path(given).expanduser()
    if a.exists() and b.exists() and a.resolve() == b.resolve():
        return True
    if not is_dataset_dir(b):
        return False
    _, meta = read_checkpoint_config(latest)
    sha = meta.get("provenance", {}).get("dataset_sha256")
    return sha is not None and read_meta(b).get("sha256") == sha


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
    cores = cpu_count()
    if cfg.num_threads is not None and cfg.num_threads > THREADS_PER_CORE * cores:
        raise ConfigError(
            f"TrainingConfig.num_threads = {cfg.num_threads} is more than {THREADS_PER_CORE}x the "
            f"{cores} CPU core(s) this process may use; extra threads only slow torch down: give "
            f"at most {THREADS_PER_CORE * cores} (the number of cores is usually fastest)")
    if cfg.wandb_log and importlib.util.find_spec("wandb") is None:
        raise ConfigError("wandb_log is set but wandb is not installed: pip install wandb "
                          "(or pip install 'nanollm-gpt[wandb]'), or drop --wandb-log")


def check_config(cfg: TrainingConfig, given_model_fields: Collection[str] | None = None, *,
                 overwrite: bool = False) -> None:
    """Everything that can be known to fail before touching data or weights.

    `given_model_fields`: the ModelConfig fields the user set (flags and config file); default:
    those that differ from ModelConfig's defaults. `overwrite`: a new run may replace an
    earlier run in out_dir (trainer/run_dir.py)."""
    cfg.validate()
    cfg.model.validate()  # TrainingConfig.validate does not descend into the nested config
    check_tokenizer_name(cfg)
    check_init_from(cfg)
    check_out_dir(cfg, overwrite=overwrite)
    given = changed_fields(cfg.model) if given_model_fields is None else given_model_fields
    check_model_shape(cfg, given)
    if init_kind(cfg.init_from) != "resume" or cfg.data_path is not None:
        check_data_path(cfg)
        check_data_dir(cfg)
    check_scratch_vocabulary(cfg, given)
    check_resume_data(cfg)
    check_system(cfg)
