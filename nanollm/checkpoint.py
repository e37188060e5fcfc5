"""The nanoLLM checkpoint folder: read, write atomically, validate.

    <dir>/config.json          {"format": "nanollm-checkpoint", "version": 1, "model": {...},
                                "tokenizer": "gpt2", "provenance": {...}}
    <dir>/model.safetensors    weights (nanoGPT names; the tied lm_head.weight is not stored)
    <dir>/trainer_state.pt     optional: optimizer, step, RNG states, data cursor
                               (plain tensors and containers only; loaded with weights_only=True)

A save writes a temporary sibling folder and renames it into place (nanollm.atomic_dir), so a
crash mid-save never leaves a half-written checkpoint where a good one was; the next save cleans
up what a killed one left. Readers never change anything on disk.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# make_temp_dir, finish_files, replace_dir_atomically and recover_interrupted_save are
# public here too: every writer of a folder (datasets, exports) shares them.
from nanollm.atomic_dir import (
    finish_files,
    interrupted_copy,
    make_temp_dir,
    read_stable,
)
from nanollm.atomic_dir import recover_interrupted_save as recover_interrupted_save
from nanollm.atomic_dir import replace_dir_atomically as replace_dir_atomically
from nanollm.config import ConfigError, ModelConfig

FORMAT = "nanollm-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"
# Prefixes that wrappers add to parameter names: torch.compile and DDP/FSDP.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
TIED_KEY = "lm_head.weight"
EMBEDDING_KEY = "transformer.wte.weight"
# A reader that saw the folder replaced under it retries this often before giving up.


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not match its config; names the file."""


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: str = "gpt2"
    provenance: dict[str, Any] = field(default_factory=dict)
    trainer_state: dict[str, Any] | None = None
    path: Path | None = None


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `_orig_mod.` / `module.` prefixes anywhere in a name; drop the tied output weight."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        for prefix in _WRAPPER_PREFIXES:
            name = name.replace(prefix, "")
        if name == TIED_KEY:
            continue
        out[name] = tensor
    return out


def is_checkpoint_dir(path: str | Path) -> bool:
    """True when `path` holds a nanoLLM checkpoint. Reads only; a replace in progress is waited
    out, so a folder being re-saved still counts."""
    path = Path(path)

    def check() -> bool:
        if not _looks_like_checkpoint(path):
            raise CheckpointError(f"{path}: not a checkpoint folder")
        return True

    try:
        return read_stable(path, check, CheckpointError)
    except CheckpointError:
        return False


def _looks_like_checkpoint(path: Path) -> bool:
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return False
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: ModelConfig,
    *,
    tokenizer: str | None = None,
    provenance: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically and return its path."""
    final = Path(path)
    tmp = make_temp_dir(final)  # also cleans up after saves of `final` that were killed
    try:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in
                   clean_state_dict(state_dict).items()}
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model": config.to_dict(),
            "tokenizer": tokenizer or config.tokenizer,
            "provenance": provenance or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        finish_files(tmp)
        replace_dir_atomically(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_config_json(folder: str | Path, kind: str) -> dict[str, Any]:
    """A model folder's config.json as a dict; missing or invalid files raise CheckpointError
    naming the file. `kind` says what the folder is ("checkpoint folder", "model folder")."""
    cfg_path = Path(folder) / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (a {kind} needs {CONFIG_FILE})")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from exc
    except OSError as exc:  # removed since the check above, unreadable, a folder...
        raise CheckpointError(f"{cfg_path}: cannot be read ({exc.strerror})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    return data


def read_checkpoint_config(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Parse and validate config.json; returns the model config and the whole metadata."""
    cfg_path = Path(path) / CONFIG_FILE
    meta = read_config_json(path, "checkpoint folder")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a nanoLLM checkpoint config (format != {FORMAT!r})")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{cfg_path}: 'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{cfg_path}: version {meta['version']} is newer than this nanoLLM "
                              f"reads ({VERSION}); upgrade nanollm-gpt")
    try:
        config = ModelConfig.from_dict(meta.get("model", {}))
    except ConfigError as exc:
        raise CheckpointError(f"{cfg_path}: invalid model config: {exc}") from exc
    return config, meta


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read model.safetensors with an error that names the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except RuntimeError as exc:  # safetensors' "unable to open file": gone since the check
        if not path.is_file():
            raise CheckpointError(f"{path}: missing") from exc
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({exc})") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({exc})") from exc


def check_state_dict(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                     source: Path | str) -> None:
    """Compare names and shapes against a freshly built model's state dict."""
    want = {k: tuple(v.shape) for k, v in clean_state_dict(expected).items()}
    have = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for name, shape in want.items():
        if have[name] != shape:
            raise CheckpointError(f"{source}: {name} has shape {have[name]}, the config "
                                  f"expects {shape}")


# torch's weights-only refusals; each names the global (class or function) the file needs.
_NOT_ALLOWED = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
    re.compile(r"reduce for unrecognized function (.+?)(?: which belongs to .*)?$", re.M),
    re.compile(r"(?:create new object|build) .* but got <class '([^']+)'>"),
    re.compile(r"``(torch\.[\w.]+)`` (?:and ``[\w.]+`` )?must be imported"),
)


def torch_load_safe(path: Path) -> Any:
    """torch.load(weights_only=True); a file that holds other objects, or is damaged, raises a
    CheckpointError that names the file and the offending global (never a fallback)."""
    try:
        with warnings.catch_warnings():  # a pickle protocol torch does not write: same checks
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... depending on damage
        text = _unpickler_message(exc)
        for pattern in _NOT_ALLOWED:
            found = pattern.search(text)
            if found:
                raise CheckpointError(
                    f"{path}: holds objects that are not allowed in a checkpoint "
                    f"({found.group(1)}); nanoLLM reads torch files only with "
                    "torch.load(weights_only=True) (tensors, numbers, strings, lists and dicts) "
                    "and never falls back to full unpickling, which could run code hidden in "
                    "the file") from None
        raise CheckpointError(f"{path}: corrupt or not a torch file ({_torch_reason(text, exc)})"
                              ) from None


def _unpickler_message(exc: Exception) -> str:
    """torch wraps the unpickler's own error in advice to load with full unpickling; the
    original error is kept as the context."""
    inner = exc.__context__
    if isinstance(exc, pickle.UnpicklingError) and isinstance(inner, pickle.UnpicklingError):
        return str(inner)
    return str(exc)


def _torch_reason(text: str, exc: Exception) -> str:
    """The cause in a torch load error, without its advice to load with full unpickling."""
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(Check the documentation|$)", text,
                      re.S)
    reason = found.group(1) if found else text.strip().splitlines()[0] if text.strip() else ""
    if not reason or "weights_only" in reason:
        return type(exc).__name__
    return reason


def load_trainer_state(path: str | Path) -> dict[str, Any] | None:
    """trainer_state.pt, or None when absent. Only tensors and plain containers unpickle."""
    state_path = Path(path) / TRAINER_STATE_FILE
    if not state_path.is_file():
        return None
    state = torch_load_safe(state_path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_path}: expected a dict, got {type(state).__name__}")
    return state


def load_checkpoint(path: str | Path, *, with_trainer_state: bool = False) -> Checkpoint:
    """Read a checkpoint folder; weights are checked against config.json before returning.

    Reads only. A folder replaced by a concurrent save while it was being read is read again
    (nanollm.atomic_dir.read_stable), so the config, weights and trainer state always come
    from one save."""
    path = Path(path)
    return read_stable(path, lambda: _read_checkpoint(path, with_trainer_state),
                       CheckpointError)


def _read_checkpoint(path: Path, with_trainer_state: bool) -> Checkpoint:
    from nanollm.model import GPT  # local: model imports nothing from here, keep it that way

    if not path.is_dir():
        aside = interrupted_copy(path)
        where = (f" (a save of it was killed; {aside.name} next to it holds the previous one, "
                 "and the next save puts it back)") if aside else ""
        raise CheckpointError(f"{path}: no such checkpoint folder{where}")
    config, meta = read_checkpoint_config(path)
    state_dict = load_state_dict_file(path / WEIGHTS_FILE)
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    check_state_dict(state_dict, expected, path / WEIGHTS_FILE)
    return Checkpoint(
        config=config,
        state_dict=state_dict,
        tokenizer=meta.get("tokenizer", config.tokenizer),
        provenance=meta.get("provenance", {}),
        trainer_state=load_trainer_state(path) if with_trainer_state else None,
        path=path,
    )
