"""nanoGPT `ckpt.pt` import.

    ckpt = load_nanogpt("out-shakespeare/ckpt.pt")   # Checkpoint(config, state_dict, ...)

nanoGPT saves `{'model': state_dict, 'model_args': {...}, 'config': {...}, 'iter_num': int,
'best_val_loss': tensor, 'optimizer': {...}}` with torch.save. The file is read with
`torch.load(weights_only=True)` only: tensors and plain containers load, anything that would run
arbitrary pickle code is refused (there is no fallback to full unpickling). Parameter names are
nanoGPT's own, so only wrapper prefixes (`_orig_mod.` from torch.compile, `module.` from DDP) and
the causal-mask buffers of older nanoGPT versions need removing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nanollm.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_state_dict,
    clean_state_dict,
    torch_load_safe,
)
from nanollm.config import ConfigError, ModelConfig

CKPT_FILE = "ckpt.pt"
GPT2_VOCAB_SIZE = 50257
_REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
# Older nanoGPT registers the causal mask as `attn.bias` when flash attention is unavailable.
_MASK_BUFFER = re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$")


def read_nanogpt_file(path: Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with errors that name the file and say why."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    ckpt = torch_load_safe(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a nanoGPT checkpoint (expected a dict with 'model')")
    if not isinstance(ckpt.get("model_args"), dict):
        raise CheckpointError(f"{path}: not a nanoGPT checkpoint (no 'model_args' dict)")
    return ckpt


def nanogpt_tokenizer(ckpt: dict[str, Any], vocab_size: int, path: Path) -> str:
    """GPT-2 BPE for GPT-2-sized vocabularies; 'byte' only when the checkpoint says so."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    named = ckpt.get("tokenizer") or ckpt["model_args"].get("tokenizer") or config.get("tokenizer")
    if named == "byte":
        if vocab_size < 257:
            raise CheckpointError(f"{path}: tokenizer 'byte' needs vocab_size >= 257, "
                                  f"model_args has {vocab_size}")
        return "byte"
    if named not in (None, "gpt2"):
        raise CheckpointError(f"{path}: tokenizer {named!r} is not one nanoLLM has ('gpt2', "
                              "'byte')")
    if vocab_size >= GPT2_VOCAB_SIZE:
        return "gpt2"
    meta = path.parent / "meta.pkl"
    where = f" ({meta} is a pickle, which nanoLLM does not load)" if meta.exists() else ""
    raise CheckpointError(
        f"{path}: vocab_size {vocab_size} is smaller than GPT-2's {GPT2_VOCAB_SIZE}, so this is "
        f"a character-level model whose vocabulary lives in nanoGPT's meta.pkl{where}. nanoLLM "
        "cannot pair it with a tokenizer; retrain it with nanoLLM's 'byte' tokenizer, or add "
        "'tokenizer': 'byte' to the checkpoint if it was trained on UTF-8 bytes")


def nanogpt_config(ckpt: dict[str, Any], path: Path) -> ModelConfig:
    args = ckpt["model_args"]
    missing = [k for k in _REQUIRED_ARGS if k not in args]
    if missing:
        raise CheckpointError(f"{path}: model_args lacks {', '.join(missing)}")
    try:
        return ModelConfig(
            n_layer=args["n_layer"], n_head=args["n_head"], n_embd=args["n_embd"],
            block_size=args["block_size"], vocab_size=args["vocab_size"],
            bias=bool(args.get("bias", True)), dropout=float(args.get("dropout", 0.0)),
            tokenizer=nanogpt_tokenizer(ckpt, int(args["vocab_size"]), path),
        )
    except ConfigError as exc:
        raise CheckpointError(f"{path}: model_args: {exc}") from exc


def _plain(value: Any) -> Any:
    """A JSON-safe scalar (tensors become floats/ints), or None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, int | float | str | bool) else None


def load_nanogpt(path: str | Path) -> Checkpoint:
    """Read a nanoGPT ckpt.pt (or a folder holding one) into a Checkpoint."""
    from nanollm.model import GPT  # local: keeps this module light for config-only callers

    path = Path(path)
    if path.is_dir():
        path = path / CKPT_FILE
    ckpt = read_nanogpt_file(path)
    config = nanogpt_config(ckpt, path)
    state_dict = {k: v for k, v in clean_state_dict(ckpt["model"]).items()
                  if not _MASK_BUFFER.match(k)}
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: 'model' must map names to tensors")
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    check_state_dict(state_dict, expected, path)
    train_cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    provenance = {
        "imported_from": "nanogpt",
        "path": str(path),
        "iter_num": _plain(ckpt.get("iter_num")),
        "best_val_loss": _plain(ckpt.get("best_val_loss")),
        "dataset": _plain(train_cfg.get("dataset")),
    }
    return Checkpoint(config=config, state_dict=state_dict, tokenizer=config.tokenizer,
                      provenance=provenance, path=path)
