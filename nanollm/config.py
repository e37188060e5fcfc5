"""Typed configuration: ModelConfig, TrainingConfig, GenerationConfig (ServerConfig, built the
same way, is in nanollm/server_config.py).

Every field carries its help text and allowed range in `dataclasses.field(metadata=...)`, so one
declaration drives validation (on construction), config files and CLI flags (`nanollm.config_io`).

    cfg = ModelConfig.from_preset("gpt2")                    # 124M
    cfg = ModelConfig(n_layer=6, n_head=6, n_embd=384)       # custom size
    ModelConfig(n_head=5)                                    # ConfigError: n_embd (768) ...
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="BaseConfig")

# More torch threads than this is a typo, not a setting: OpenMP can crash creating them.
MAX_THREADS = 1024


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    choices: tuple[Any, ...] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with help text and an allowed range, checked by BaseConfig.validate."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
        "choices": choices,
    }
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def range_text(meta: dict[str, Any]) -> str:
    lo, hi = meta["min"], meta["max"]
    left = "(" if meta["min_exclusive"] else "["
    right = ")" if meta["max_exclusive"] else "]"
    return f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"


@dataclass
class BaseConfig:
    """Shared behaviour: range validation, dict round trip and unknown-key errors."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field against its declared type, range and choices."""
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            name = f"{type(self).__name__}.{f.name}"
            value = _check_type(name, getattr(self, f.name), hints[f.name])
            setattr(self, f.name, value)
            meta = f.metadata
            if value is None or isinstance(value, BaseConfig) or not meta:
                continue
            if meta.get("choices") is not None and value not in meta["choices"]:
                allowed = ", ".join(repr(c) for c in meta["choices"])
                raise ConfigError(f"{name} = {value!r} is not allowed; choose one of {allowed}")
            if meta.get("min") is not None or meta.get("max") is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{name} must be a number, got {value!r}")
                if isinstance(value, float) and math.isnan(value):
                    raise ConfigError(f"{name} must be a number in {range_text(meta)}, got nan")
                lo, hi = meta["min"], meta["max"]
                too_low = lo is not None and (value <= lo if meta["min_exclusive"] else value < lo)
                too_high = hi is not None and (value >= hi if meta["max_exclusive"] else value > hi)
                if too_low or too_high:
                    raise ConfigError(f"{name} = {value!r} is out of range {range_text(meta)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a plain dict (a parsed YAML/JSON file); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                old = getattr(cls, "OLD_KEYS", {}).get(key)
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f": {old}" if old else f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"unknown {cls.__name__} field {key!r}{extra}")
            cls.check_section(key, value)
            sub = _nested_config_type(cls, key)
            kwargs[key] = sub.from_dict(value) if sub and isinstance(value, dict) else value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def check_section(cls, key: str, value: Any) -> None:
        """A nested config (TrainingConfig's `model:`) must be given as a mapping; a file that
        says `model: 4` would otherwise be dropped silently when flags add model fields."""
        sub = _nested_config_type(cls, key)
        if sub is not None and not isinstance(value, dict | sub):
            raise ConfigError(f"{cls.__name__}.{key} must be a mapping of {sub.__name__} fields "
                              f"(`{key}:` followed by indented `name: value` lines), got "
                              f"{value!r}")

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """The value if it fits the annotation (an int is accepted for a float and converted);
    otherwise a ConfigError. YAML and JSON hand us untyped values, so this is the gate."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if annotation in (bool, str) and not isinstance(value, annotation):
        kind = "true or false" if annotation is bool else "a string"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    is_config = isinstance(annotation, type) and issubclass(annotation, BaseConfig)
    if is_config and not isinstance(value, annotation):
        raise ConfigError(f"{name} must be a {annotation.__name__}, got {value!r}")
    return value


def _nested_config_type(cls: type, name: str) -> type[BaseConfig] | None:
    nested: dict[str, type[BaseConfig]] = getattr(cls, "NESTED", {})
    return nested.get(name)


# ----------------------------------------------------------------------------------------------
# Model


@dataclass
class ModelConfig(BaseConfig):
    """Shape of a GPT-2-family model (nanoGPT's GPTConfig)."""

    n_layer: int = option(12, "number of transformer blocks", min=1, max=256)
    n_head: int = option(12, "attention heads per block", min=1, max=256)
    n_embd: int = option(768, "embedding width (divisible by n_head)", min=1, max=65536)
    block_size: int = option(1024, "context length in tokens", min=1, max=1_048_576)
    vocab_size: int = option(50304, "vocabulary size (50257 for GPT-2, padded to 50304 for speed)",
                             min=1, max=4_194_304)
    dropout: float = option(0.0, "dropout probability (training only)", min=0.0, max=1.0,
                            max_exclusive=True)
    bias: bool = option(True, "use bias in Linear and LayerNorm layers (GPT-2: true)")
    tokenizer: str = option("gpt2", "tokenizer name: 'gpt2' (BPE), 'char' or 'byte'",
                            choices=("gpt2", "byte", "char"))

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
        "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
        "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
        "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    }

    def validate(self) -> None:
        super().validate()
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"ModelConfig.n_embd ({self.n_embd}) must be divisible by "
                f"ModelConfig.n_head ({self.n_head})"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A GPT-2 size by name; OpenAI's checkpoints use vocab 50257, block 1024, bias."""
        if name not in cls.PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        args: dict[str, Any] = dict(cls.PRESETS[name], vocab_size=50257, block_size=1024, bias=True)
        args.update(overrides)
        return cls(**args)


# ----------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainingConfig(BaseConfig):
    """Everything one training run needs; `gpt-train` flags map onto these fields."""

    NESTED: ClassVar[dict[str, type[BaseConfig]]] = {"model": ModelConfig}
    # Keys of nanoLLM_gpt's training files that do not exist here, with what to do instead.
    OLD_KEYS: ClassVar[dict[str, str]] = {
        "always_save_checkpoint": "remove it: every evaluation saves latest/, and best/ when "
                                  "the validation loss improves",
        "dataset": "use data_path (a text file, folder, http(s) URL or prepared dataset)",
    }

    model: ModelConfig = field(default_factory=ModelConfig)
    # data
    data_path: str | None = option(None, "text file, folder, http(s) URL or prepared dataset "
                                          "folder")
    data_dir: str = option("data", "where prepared datasets are written")
    allow_private_urls: bool = option(False, "let an http(s) data_path reach loopback, private, "
                                             "link-local and cloud metadata addresses (local "
                                             "use; never for a URL someone else chose)")
    train_val_split: float = option(0.1, "fraction of the text held out for validation",
                                    min=0.0, max=0.5, min_exclusive=True)
    # run
    out_dir: str = option("out", "run folder: checkpoints, events.jsonl, train.log")
    init_from: str = option("scratch", "'scratch', 'resume', a checkpoint path or a GPT-2 preset")
    max_iters: int = option(5000, "optimizer steps to run", min=0)
    batch_size: int = option(12, "sequences per micro-batch (per rank)", min=1, max=65536)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step (global)",
                                              min=1)
    # optimizer
    learning_rate: float = option(6e-4, "peak learning rate", min=0.0)
    weight_decay: float = option(0.1, "AdamW weight decay (2-D weights only)", min=0.0)
    beta1: float = option(0.9, "AdamW beta1", min=0.0, max=1.0, max_exclusive=True)
    beta2: float = option(0.95, "AdamW beta2", min=0.0, max=1.0, max_exclusive=True)
    grad_clip: float = option(1.0, "clip gradients to this global norm (0 = off)", min=0.0)
    # schedule
    decay_lr: bool = option(True, "cosine decay after warmup")
    warmup_iters: int = option(100, "linear warmup steps", min=0)
    lr_decay_iters: int | None = option(None, "step where decay reaches min_lr (default max_iters)",
                                        min=0)
    min_lr: float | None = option(None, "learning rate at the end of decay (default: "
                                        "learning_rate / 10, as nanoGPT's 6e-4 -> 6e-5)", min=0.0)
    # evaluation, logging, checkpoints
    eval_interval: int = option(250, "evaluate and save every N steps", min=1)
    eval_iters: int = option(20, "batches per split in each evaluation", min=1, max=100_000)
    log_interval: int = option(10, "log every N steps", min=1)
    eval_only: bool = option(False, "evaluate once and exit")
    # system
    device: str = option("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = option("auto", "'auto', 'float32', 'bfloat16' or 'float16'",
                        choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool = option(False, "torch.compile the model")
    seed: int = option(1337, "random seed", min=0)
    backend: str = option("auto", "distributed backend: 'auto' (nccl on GPU, gloo on CPU)",
                          choices=("auto", "nccl", "gloo"))
    fsdp: bool = option(False, "shard with FSDP instead of DDP (GPU)")
    num_threads: int | None = option(None, "torch threads per rank (default on CPU: 1 for models "
                                     "under 20M params, else cores / local ranks)",
                                     min=1, max=MAX_THREADS)
    peak_flops: float | None = option(None, "peak FLOP/s of one device for MFU (default: the GPU "
                                      "table; CPU: 9e10 (fp32) or 2e11 (bf16) per thread)", min=0.0,
                                      min_exclusive=True)
    progress: bool = option(True, "show a progress bar with ETA on the console (rank 0)")
    # logging integrations
    wandb_log: bool = option(False, "log to Weights & Biases (needs wandb installed)")
    wandb_project: str = option("nanollm", "W&B project")
    wandb_run_name: str | None = option(None, "W&B run name")

    def validate(self) -> None:
        super().validate()
        if self.min_lr is not None and self.min_lr > self.learning_rate:
            raise ConfigError(
                f"TrainingConfig.min_lr ({self.min_lr}) must not exceed "
                f"TrainingConfig.learning_rate ({self.learning_rate}); leave min_lr out to "
                "decay to learning_rate / 10"
            )

    @property
    def final_lr(self) -> float:
        """The learning rate the decay ends at: min_lr, or learning_rate / 10 when unset."""
        return self.learning_rate / 10 if self.min_lr is None else self.min_lr


# ----------------------------------------------------------------------------------------------
# Generation


@dataclass
class GenerationConfig(BaseConfig):
    """Sampling settings for one request (nanoLLM_gpt's GenerationConfig)."""

    max_new_tokens: int = option(100, "tokens to generate at most", min=1, max=1_000_000)
    temperature: float = option(0.8, "softmax temperature; 0 = greedy", min=0.0, max=100.0)
    top_k: int = option(200, "keep the k most likely tokens (0 = off)", min=0)
    top_p: float = option(1.0, "nucleus sampling mass (1 = off)", min=0.0, max=1.0,
                          min_exclusive=True)
    repetition_penalty: float = option(1.0, "divide logits of seen tokens (1 = off)", min=0.0,
                                       max=10.0, min_exclusive=True)
    presence_penalty: float = option(0.0, "subtract once per seen token (OpenAI)", min=-2.0,
                                     max=2.0)
    frequency_penalty: float = option(0.0, "subtract per occurrence (OpenAI)", min=-2.0, max=2.0)
    seed: int | None = option(None, "random seed for this request (reproducible output)", min=0,
                              max=2**63 - 1)
    # option() returns a dataclasses.field with default_factory, so nothing mutable is shared.
    stop_sequences: list[str] = option(  # noqa: RUF009
        default_factory=list, help="stop at any of these strings")
    num_samples: int = option(1, "independent samples, generated as one batch", min=1, max=256)
    logprobs: bool = option(False, "return the log-probability of each chosen token")
    top_logprobs: int = option(0, "with logprobs: also the N most likely tokens at each step",
                               min=0, max=20)
    stop_at_eos: bool = option(True, "finish when the model emits <|endoftext|>")
    stream: bool = option(False, "InferencePipeline.generate returns an iterator of text pieces")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.stop_sequences, list) or not all(
            isinstance(s, str) and s for s in self.stop_sequences
        ):
            raise ConfigError("GenerationConfig.stop_sequences must be a list of non-empty strings")
        if self.top_logprobs and not self.logprobs:
            raise ConfigError("GenerationConfig.top_logprobs needs logprobs = true")
