"""What a run may change about the model it resumes or fine-tunes.

A checkpoint fixes the model's shape. Shape settings that were *given* (a flag, the `--config`
file, or in Python a ModelConfig field that differs from its default) must agree with it, except:

- dropout: any value (checkpoints are usually saved with dropout 0);
- block_size when fine-tuning: a smaller one crops the position embeddings; a larger one is an
  error, since positions past the checkpoint's were never trained. A resumed run keeps its
  block_size, like every other field: it continues exactly where it stopped.

vocab_size is never set by hand: it comes from the checkpoint (from scratch, from the dataset),
and a given one (only a config file can give it) must agree. A mismatch is an error naming the
field, both values and what to do, never a silent choice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from nanollm.config import ConfigError, ModelConfig
from trainer.data_source import canonical_tokenizer

SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "tokenizer")


def changed_fields(model: ModelConfig) -> set[str]:
    """ModelConfig fields that differ from their defaults: in Python, the ones that were set."""
    default = ModelConfig()
    return {f.name for f in dataclasses.fields(model)
            if getattr(model, f.name) != getattr(default, f.name)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _mismatch(name: str, want: Any, have: Any, source: str, resume: bool) -> str:
    given = f"ModelConfig.{name} = {want!r} was given"
    drop = f"drop {_flag(name)} (and `{name}:` from the config file)"
    if resume:
        text = (f"{given} but the run being resumed ({source}) has {name} = {have!r}; a resumed "
                f"run keeps its model: {drop}, or train a new model in another --out-dir")
        if name == "block_size" and want < have:
            text += (f"; for a shorter context fine-tune from it: --init-from {source} "
                     f"--out-dir NEW --block-size {want}")
        return text
    if name == "block_size":  # only a larger one reaches here
        return (f"{given} but the checkpoint {source} has block_size = {have}; a context can be "
                f"cropped but not extended (positions past {have} were never trained): use "
                f"--block-size {have} or less")
    return (f"{given} but the checkpoint {source} has {name} = {have!r}; fine-tuning keeps the "
            f"checkpoint's shape and tokenizer (only --dropout and a smaller --block-size "
            f"apply): {drop}, or use --init-from scratch to train a new model of that shape")


def check_against_checkpoint(requested: ModelConfig, given: Collection[str], have: ModelConfig,
                             have_tokenizer: str, *, source: str, resume: bool) -> None:
    """ConfigError for the first given shape field of `requested` that the checkpoint `have`
    (from `source`, with `have_tokenizer`) cannot honour."""
    if "vocab_size" in given and requested.vocab_size != have.vocab_size:
        raise ConfigError(f"ModelConfig.vocab_size = {requested.vocab_size} was given but "
                          f"{source} has vocab_size = {have.vocab_size}; the vocabulary comes "
                          "from the checkpoint: drop `vocab_size:` from the config file")
    for name in SHAPE_FIELDS:
        if name not in given:
            continue
        want, got = getattr(requested, name), getattr(have, name)
        if name == "tokenizer":
            want, got = canonical_tokenizer(want), canonical_tokenizer(have_tokenizer)
        if want == got or (name == "block_size" and want < got and not resume):
            continue
        raise ConfigError(_mismatch(name, want, got, source, resume))
