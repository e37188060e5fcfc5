"""Load a model for inference from whatever the user points at.

    loaded = ModelLoader.load("out/latest")                 # nanoLLM checkpoint folder
    loaded = ModelLoader.load("models/gpt2")                # HuggingFace GPT-2 folder
    loaded = ModelLoader.load("out-shakespeare/ckpt.pt")    # nanoGPT checkpoint
    loaded = ModelLoader.load(model_type="gpt2")            # a GPT-2 size found on this machine
    loaded = ModelLoader.load()                             # the shipped demo model
    loaded.model, loaded.tokenizer

Rules: exactly one of checkpoint_path / model_type; a GPT-2 name is looked up only in local
folders (nothing is downloaded) and a missing one is an error that says what to download — never
a different model. The tokenizer is the one the checkpoint records. compile=True is refused
(COMPILE_REFUSED says why) rather than accepted and silently not used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from nanollm.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    TIED_KEY,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
)
from nanollm.config import ModelConfig
from nanollm.device import resolve_device, resolve_dtype
from nanollm.hf_gpt2 import WEIGHT_FILES, load_hf_gpt2, read_hf_config
from nanollm.model import GPT
from nanollm.nanogpt_import import CKPT_FILE, load_nanogpt
from nanollm.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

KINDS = ("nanollm", "huggingface", "nanogpt")
# torch.compile(model) or model.compile() wraps forward(), the training path; generation calls
# forward_cached (KV cache, oneDNN kernels on CPU), which dynamo then never sees.
COMPILE_REFUSED = ("compile=True is not supported for inference: torch.compile wraps the model's "
                   "training forward(), which generation never calls; compile applies to "
                   "training (TrainingConfig.compile, gpt-train --compile)")
# Hub repositories per GPT-2 size: the legacy short name and the current one.
_HUB_REPOS = {name: (name, f"openai-community/{name}") for name in ModelConfig.PRESETS}


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint or GPT-2 model asked for is not on this machine; says where to get it."""


@dataclass
class LoadedModel:
    model: GPT  # on the device, in the dtype, eval mode, prepare_for_inference() done
    tokenizer: Tokenizer  # the tokenizer the source records
    source: str  # the path or preset name it came from
    kind: str  # "nanollm" | "huggingface" | "nanogpt"
    config: ModelConfig


# ----------------------------------------------------------------------------------------------
# finding and reading a source


def detect_kind(path: Path) -> str:
    """Which of KINDS a path holds, judged by its files (errors name what was expected)."""
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name == CONFIG_FILE or path.name in WEIGHT_FILES:
            return detect_kind(path.parent)  # a file inside a checkpoint folder
        return "nanogpt"
    if (path / CONFIG_FILE).is_file():
        meta = read_hf_config(path)  # plain JSON read; invalid JSON names the file
        if meta.get("format") == FORMAT:
            return "nanollm"
        if meta.get("model_type") == "gpt2":
            return "huggingface"
        if "model_type" in meta:
            raise CheckpointError(f"{path / CONFIG_FILE}: model_type {meta['model_type']!r} is "
                                  "not GPT-2; nanoLLM loads only GPT-2-architecture models")
        raise CheckpointError(f"{path / CONFIG_FILE}: neither a nanoLLM checkpoint config "
                              f"(format {FORMAT!r}) nor a HuggingFace GPT-2 config")
    if (path / CKPT_FILE).is_file():
        return "nanogpt"
    raise CheckpointError(f"{path}: not a checkpoint: expected {CONFIG_FILE} (nanoLLM or "
                          f"HuggingFace GPT-2 folder) or {CKPT_FILE} (nanoGPT)")


def read_any_checkpoint(path: str | Path) -> tuple[Checkpoint, str]:
    """Weights + config of any supported source, in nanoLLM names, on CPU, as stored."""
    path = Path(path).expanduser()
    kind = detect_kind(path)
    if path.is_file() and kind != "nanogpt":
        path = path.parent
    if kind == "nanollm":
        return load_checkpoint(path), kind
    if kind == "huggingface":
        return load_hf_gpt2(path), kind
    return load_nanogpt(path), kind


def _hub_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads, read from the environment at call time."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def _snapshots(repo_root: Path) -> list[Path]:
    """Snapshot folders of one cached hub repo, the one refs/main points at first."""
    ref = repo_root / "refs" / "main"
    found = [repo_root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    if (repo_root / "snapshots").is_dir():
        found += sorted((repo_root / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime,
                        reverse=True)
    return found


def search_roots(name: str) -> list[Path]:
    """The places a local copy of GPT-2 `name` may live, in search order (absolute paths)."""
    roots = []
    if os.environ.get("NANOLLM_MODELS_DIR"):
        roots.append(Path(os.environ["NANOLLM_MODELS_DIR"]) / name)
    roots.append(Path("models") / name)
    for cache in _hub_cache_dirs():
        roots += [cache / ("models--" + repo.replace("/", "--")) for repo in _HUB_REPOS[name]]
    return list(dict.fromkeys(p.expanduser().absolute() for p in roots))


def candidate_dirs(name: str) -> list[Path]:
    """Folders that may hold the model: the plain roots, and each hub snapshot."""
    dirs: list[Path] = []
    for root in search_roots(name):
        dirs += _snapshots(root) if root.name.startswith("models--") else [root]
    return dirs


def _has_weights(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def find_pretrained(name: str) -> Path:
    """The local folder holding GPT-2 `name`; ModelNotFoundError says what to download."""
    if name not in ModelConfig.PRESETS:
        raise ValueError(f"unknown model_type {name!r}; choose one of "
                         f"{', '.join(ModelConfig.PRESETS)} (or pass checkpoint_path)")
    for folder in candidate_dirs(name):
        if _has_weights(folder):
            return folder
    looked = "\n  ".join(str(p) for p in search_roots(name))
    raise ModelNotFoundError(
        f"GPT-2 model {name!r} is not on this machine (nanoLLM never downloads). Looked in:\n  "
        f"{looked}\nDownload it where there is internet access, e.g.\n  huggingface-cli download "
        f"{name} --local-dir models/{name}\nand put the folder at models/{name} (relative to the "
        f"working directory) or under $NANOLLM_MODELS_DIR/{name}; the HuggingFace cache "
        "($HF_HOME/hub) is searched too.")


def _check_preset_size(config: ModelConfig, name: str, folder: Path) -> None:
    """A folder found for `name` must hold that size of GPT-2, not some other model."""
    want = ModelConfig.PRESETS[name]
    have = {k: getattr(config, k) for k in want}
    if have != want:
        raise CheckpointError(f"{folder}: found for model_type {name!r} but holds a model with "
                              f"{have}, while {name} has {want}; remove or rename that folder")


# ----------------------------------------------------------------------------------------------
# building the model


def build_model(ckpt: Checkpoint, device: torch.device, dtype: torch.dtype) -> GPT:
    """A GPT with the checkpoint's weights, without spending time on a random init first."""
    with torch.device("meta"):
        model = GPT(ckpt.config)
    sd = dict(ckpt.state_dict)
    sd[TIED_KEY] = sd["transformer.wte.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    model.transformer.wte.weight = model.lm_head.weight  # assign=True made two Parameters
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:  # a tensor the state dict does not carry was left uninitialised
        raise RuntimeError(f"GPT tensors not restored from the checkpoint: {still_meta[:5]}")
    return model.to(device=device, dtype=dtype)


class ModelLoader:
    """Static entry points; see the module docstring for the rules."""

    @staticmethod
    def default_checkpoint() -> Path:
        """The demo model that ships inside the package."""
        return Path(str(resources.files("nanollm") / "assets" / "demo"))

    @staticmethod
    def load(
        checkpoint_path: str | Path | None = None,
        model_type: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        compile: bool = False,
    ) -> LoadedModel:
        if checkpoint_path is not None and model_type is not None:
            raise ValueError("give checkpoint_path or model_type, not both")
        if compile:
            raise ValueError(COMPILE_REFUSED)
        # A bad device or dtype fails before a large checkpoint is read.
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        if model_type is not None:
            folder = find_pretrained(model_type)
            ckpt, kind = read_any_checkpoint(folder)
            _check_preset_size(ckpt.config, model_type, folder)
            log.info("model_type %s: loading %s", model_type, folder)
            source = model_type
        else:
            if checkpoint_path is None:
                checkpoint_path = ModelLoader.default_checkpoint()
                if not (checkpoint_path / CONFIG_FILE).is_file():
                    raise ModelNotFoundError(
                        f"no checkpoint_path or model_type given and the demo model "
                        f"{checkpoint_path} is missing; pass a checkpoint (or build the demo "
                        "with `make demo-model`)")
            ckpt, kind = read_any_checkpoint(checkpoint_path)
            source = str(checkpoint_path)
        tokenizer = _tokenizer_for(ckpt, source)
        model = build_model(ckpt, dev, torch_dtype).prepare_for_inference()
        return LoadedModel(model=model, tokenizer=tokenizer, source=source, kind=kind,
                           config=ckpt.config)

    @staticmethod
    def load_model(
        checkpoint_path: str | Path | None = None,
        model_type: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        compile: bool = False,
    ) -> GPT:
        return ModelLoader.load(checkpoint_path, model_type, device, dtype, compile).model


def _tokenizer_for(ckpt: Checkpoint, source: str) -> Tokenizer:
    try:
        tokenizer = load_tokenizer(ckpt.tokenizer)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    if tokenizer.vocab_size > ckpt.config.vocab_size:
        raise CheckpointError(f"{source}: tokenizer {ckpt.tokenizer!r} has "
                              f"{tokenizer.vocab_size} tokens but the model's vocab_size is "
                              f"{ckpt.config.vocab_size}")
    return tokenizer


def describe(loaded: LoadedModel) -> str:
    """One line for logs: where the model came from and its size."""
    c = loaded.config
    return (f"{loaded.source} ({loaded.kind}): {c.n_layer} layers, {c.n_head} heads, "
            f"{c.n_embd} wide, vocab {c.vocab_size}, tokenizer {loaded.tokenizer.name}, "
            f"{loaded.model.get_num_params() / 1e6:.2f}M params")

