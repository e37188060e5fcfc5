"""HuggingFace GPT-2 folders: import into nanoLLM, export from nanoLLM.

    ckpt = load_hf_gpt2("models/gpt2")          # Checkpoint(config, state_dict, tokenizer="gpt2")
    export_hf_gpt2("out/hf", ckpt.state_dict, ckpt.config, tokenizer="gpt2")
    # transformers.GPT2LMHeadModel.from_pretrained("out/hf") gives the same logits

HF stores the attention and MLP projections as `Conv1D` with weights laid out (in, out); nanoLLM
uses `nn.Linear`, (out, in), so those four matrices are transposed both ways. HF also keeps the
causal mask as `attn.bias` / `attn.masked_bias` buffers, which are dropped: nanoLLM's attention
is causal by construction. Weights are read from safetensors, or from `pytorch_model.bin` with
`torch.load(weights_only=True)`; nothing is ever fully unpickled. transformers is not needed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nanollm.checkpoint import (
    EMBEDDING_KEY,
    TIED_KEY,
    Checkpoint,
    CheckpointError,
    check_state_dict,
    finish_files,
    make_temp_dir,
    read_config_json,
    replace_dir_atomically,
    torch_load_safe,
)
from nanollm.config import ConfigError, ModelConfig
from nanollm.confined_paths import escape_reason, is_plain_name
from nanollm.interrupt import sigterm_raises
from nanollm.tokenizer import gpt2_vocab_dir, load_tokenizer

CONFIG_FILE = "config.json"
# Weight files in the order HF itself prefers them; the index files list shards.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
GPT2_VOCAB_SIZE = 50257
# Conv1D weights, stored (in, out) by HF and (out, in) by nanoLLM.
_CONV1D = re.compile(r"^transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                     r"\.weight$")
# The causal-mask buffers older HF GPT-2 files carry (not weights).
_MASK_BUFFER = re.compile(r"^transformer\.h\.\d+\.attn\.(bias|masked_bias)$")
# GPT2Config defaults: HF fills absent keys with these, so the import does too.
_HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    "resid_pdrop": 0.1, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
}
# Both names are GELU with the tanh approximation, which nanoLLM's MLP computes.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_NANOLLM_TOKENIZER_KEY = "nanollm_tokenizer"


# ----------------------------------------------------------------------------------------------
# import


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """config.json of an HF folder as a dict; errors name the file."""
    return read_config_json(path, "model folder")


def is_hf_gpt2_dir(path: str | Path) -> bool:
    """A folder whose config.json says model_type gpt2 (the weights are checked on load)."""
    try:
        return read_hf_config(path).get("model_type") == "gpt2"
    except CheckpointError:
        return False


def hf_config_to_model_config(hf: dict[str, Any], source: str | Path) -> ModelConfig:
    """Map a GPT2Config dict to ModelConfig; refuse what nanoLLM's GPT cannot compute exactly."""
    if hf.get("model_type") != "gpt2":
        raise CheckpointError(f"{source}: model_type is {hf.get('model_type')!r}, only 'gpt2' "
                              "folders can be imported")
    cfg = {**_HF_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "n_inner"}}

    def refuse(field: str, why: str) -> CheckpointError:
        return CheckpointError(f"{source}: {field} = {cfg[field]!r} is not supported: {why}")

    if cfg["activation_function"] not in _TANH_GELU:
        raise refuse("activation_function", "nanoLLM's MLP uses GELU with the tanh approximation "
                     f"({' or '.join(_TANH_GELU)})")
    if not math.isclose(float(cfg["layer_norm_epsilon"]), 1e-5, rel_tol=1e-6):
        raise refuse("layer_norm_epsilon", "nanoLLM's LayerNorm uses 1e-5")
    if cfg["n_inner"] is not None and cfg["n_inner"] != 4 * cfg["n_embd"]:
        raise refuse("n_inner", f"the MLP width must be 4 * n_embd = {4 * cfg['n_embd']}")
    if not cfg["scale_attn_weights"]:
        raise refuse("scale_attn_weights", "attention is always scaled by 1/sqrt(head_dim)")
    if cfg["scale_attn_by_inverse_layer_idx"]:
        raise refuse("scale_attn_by_inverse_layer_idx", "attention scores are not scaled per layer")
    if cfg["add_cross_attention"]:
        raise refuse("add_cross_attention", "GPT-2 decoders here have no cross-attention")
    # reorder_and_upcast_attn only changes the precision attention is computed in (it upcasts
    # fp16 scores to fp32); the function is the same, so it is accepted.
    try:
        return ModelConfig(
            n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
            block_size=cfg["n_positions"], vocab_size=cfg["vocab_size"],
            dropout=float(cfg["resid_pdrop"]), bias=True,
            tokenizer=hf_tokenizer_name(cfg, source),
        )
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc


def hf_tokenizer_name(hf: dict[str, Any], source: str | Path) -> str:
    """The tokenizer nanoLLM pairs with an HF model: recorded by our export, else GPT-2 BPE."""
    vocab = hf.get("vocab_size", GPT2_VOCAB_SIZE)
    name = hf.get(_NANOLLM_TOKENIZER_KEY)
    if name is None:
        if vocab < GPT2_VOCAB_SIZE:
            raise CheckpointError(
                f"{source}: vocab_size {vocab} is smaller than GPT-2's {GPT2_VOCAB_SIZE} and the "
                f"config names no tokenizer; set \"{_NANOLLM_TOKENIZER_KEY}\": \"byte\" in "
                f"{CONFIG_FILE} if the model was trained on bytes")
        return "gpt2"
    try:
        tok = load_tokenizer(name)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {_NANOLLM_TOKENIZER_KEY}: {exc}") from exc
    if tok.vocab_size > vocab:
        raise CheckpointError(f"{source}: tokenizer {name!r} has {tok.vocab_size} tokens but "
                              f"vocab_size is {vocab}")
    return name


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors or .bin file; .bin only through weights_only=True."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt or unreadable weights file ({exc})") from exc
    state = torch_load_safe(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return state


def _hub_blobs(path: Path) -> tuple[Path, ...]:
    """The hub cache keeps a revision's files in `<repo>/snapshots/<rev>/` as links into
    `<repo>/blobs/`; for such a folder, files may also lead there."""
    real = path.resolve()
    blobs = real.parent.parent / "blobs"
    return (blobs,) if real.parent.name == "snapshots" and blobs.is_dir() else ()


def _weight_path(path: Path, name: str, listed_in: Path | None = None) -> Path:
    """path/name, refused when the name or a link leads out of the folder (or its hub blobs)."""
    where = f" (listed in {listed_in.name})" if listed_in is not None else ""
    if not isinstance(name, str) or not is_plain_name(name):
        raise CheckpointError(f"{listed_in or path}: file name {name!r}{where} is not a plain "
                              f"name inside {path}")
    file = path / name
    escape = escape_reason(file, path, also=_hub_blobs(path))
    if escape is not None:
        raise CheckpointError(f"{file}{where}: {escape}; weight files must be inside the "
                              "model folder")
    return file


def read_hf_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The raw HF state dict of a folder (single file or shards) and the file it came from.
    Every file read, shards named by an index included, must be inside the folder."""
    path = Path(path)
    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        file = _weight_path(path, name)
        if not name.endswith(".index.json"):
            return _load_weight_file(file), file
        try:
            index = json.loads(file.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{file}: not a valid shard index ({exc})") from exc
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            shard_file = _weight_path(path, shard, listed_in=file)
            if not shard_file.is_file():
                raise CheckpointError(f"{shard_file}: missing (listed in {file.name})")
            state.update(_load_weight_file(shard_file))
        return state, file
    raise CheckpointError(f"{path}: no weights found (expected one of {', '.join(WEIGHT_FILES)})")


def hf_to_nanollm_state_dict(state: dict[str, torch.Tensor],
                             source: str | Path) -> dict[str, torch.Tensor]:
    """HF names -> nanoLLM names: add `transformer.`, transpose Conv1D, drop mask buffers.

    The output head is tied to the token embedding in nanoLLM; an HF lm_head.weight is accepted
    only when it equals wte (it is then dropped, as nanoLLM checkpoints do).
    """
    out: dict[str, torch.Tensor] = {}
    head = None
    for name, tensor in state.items():
        if name == TIED_KEY:
            head = tensor
            continue
        if not name.startswith("transformer."):
            name = "transformer." + name
        if _MASK_BUFFER.match(name):
            continue
        out[name] = tensor.t().contiguous() if _CONV1D.match(name) else tensor
    wte = out.get(EMBEDDING_KEY)
    if head is not None and wte is not None and not (head.shape == wte.shape
                                                     and torch.equal(head, wte)):
        raise CheckpointError(f"{source}: lm_head.weight differs from the token embedding "
                              "(tie_word_embeddings is false); nanoLLM's GPT ties them")
    return out


def load_hf_gpt2(path: str | Path) -> Checkpoint:
    """Read an HF GPT-2 folder into a Checkpoint (nanoLLM names and layout, weights checked)."""
    from nanollm.model import GPT  # local import keeps the module light for config-only callers

    path = Path(path)
    hf = read_hf_config(path)
    config = hf_config_to_model_config(hf, path / CONFIG_FILE)
    raw, weights_file = read_hf_weights(path)
    if not hf.get("tie_word_embeddings", True) and TIED_KEY not in raw:
        raise CheckpointError(f"{path / CONFIG_FILE}: tie_word_embeddings is false but "
                              f"{weights_file.name} holds no lm_head.weight")
    state_dict = hf_to_nanollm_state_dict(raw, weights_file)
    with torch.device("meta"):
        expected = GPT(config).state_dict()
    check_state_dict(state_dict, expected, weights_file)
    provenance = {"imported_from": "huggingface", "path": str(path),
                  "transformers_version": hf.get("transformers_version")}
    return Checkpoint(config=config, state_dict=state_dict, tokenizer=config.tokenizer,
                      provenance=provenance, path=path)


# ----------------------------------------------------------------------------------------------
# export


def model_config_to_hf(config: ModelConfig, tokenizer: str, dtype: torch.dtype) -> dict[str, Any]:
    """A GPT2Config dict for GPT2LMHeadModel (tied head, tanh GELU, eps 1e-5)."""
    eot = load_tokenizer(tokenizer).eot_token
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "dtype": str(dtype).removeprefix("torch."),
        _NANOLLM_TOKENIZER_KEY: tokenizer,
    }


def nanollm_to_hf_state_dict(state_dict: dict[str, torch.Tensor], config: ModelConfig,
                             dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """nanoLLM names -> HF names (Conv1D transposed). bias=False models get zero biases, which
    compute exactly the same function in HF's always-biased GPT-2."""
    from nanollm.checkpoint import clean_state_dict

    sd = clean_state_dict(state_dict)
    if EMBEDDING_KEY not in sd:
        raise CheckpointError(f"state dict has no {EMBEDDING_KEY}")
    dtype = dtype or sd[EMBEDDING_KEY].dtype
    out = {name: (t.t() if _CONV1D.match(name) else t).detach().to("cpu", dtype).contiguous()
           for name, t in sd.items()}
    if not config.bias:
        C = config.n_embd
        widths = {"ln_1": C, "ln_2": C, "attn.c_attn": 3 * C, "attn.c_proj": C,
                  "mlp.c_fc": 4 * C, "mlp.c_proj": C}
        for i in range(config.n_layer):
            for part, width in widths.items():
                out.setdefault(f"transformer.h.{i}.{part}.bias", torch.zeros(width, dtype=dtype))
        out.setdefault("transformer.ln_f.bias", torch.zeros(C, dtype=dtype))
    return out


def _write_gpt2_tokenizer(folder: Path, config: ModelConfig) -> None:
    """vocab.json + merges.txt are the shipped encoder.json + vocab.bpe under HF's names."""
    shutil.copyfile(gpt2_vocab_dir() / "encoder.json", folder / "vocab.json")
    shutil.copyfile(gpt2_vocab_dir() / "vocab.bpe", folder / "merges.txt")
    eot = "<|endoftext|>"
    tok_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": config.block_size,
        "bos_token": eot, "eos_token": eot, "unk_token": eot,
        "add_prefix_space": False, "add_bos_token": False, "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    special = {"bos_token": eot, "eos_token": eot, "unk_token": eot}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def export_hf_gpt2(out_dir: str | Path, state_dict: dict[str, torch.Tensor], config: ModelConfig,
                   *, tokenizer: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write an HF GPT-2 folder atomically: config.json, model.safetensors,
    generation_config.json, and for the gpt2 tokenizer vocab.json, merges.txt and
    tokenizer_config.json. A byte-tokenizer model gets no HF tokenizer files; its config.json
    records `nanollm_tokenizer: "byte"` so nanoLLM re-imports it with the right tokenizer."""
    tokenizer = tokenizer or config.tokenizer
    weights = nanollm_to_hf_state_dict(state_dict, config, dtype)
    final = Path(out_dir)
    with sigterm_raises("export"):  # SIGTERM, like Ctrl-C, removes the temp folder
        tmp = make_temp_dir(final)
        try:
            save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            hf = model_config_to_hf(config, tokenizer, weights[EMBEDDING_KEY].dtype)
            (tmp / CONFIG_FILE).write_text(json.dumps(hf, indent=2) + "\n")
            gen = {"bos_token_id": hf["bos_token_id"], "eos_token_id": hf["eos_token_id"]}
            (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
            if tokenizer == "gpt2":
                _write_gpt2_tokenizer(tmp, config)
            finish_files(tmp)  # safetensors leaves its file private (0600)
            replace_dir_atomically(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
