"""ModelLoader: source detection, nanoGPT import, GPT-2 lookup, argument rules, tokenizers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import CheckpointError, save_checkpoint
from nanollm.config import ModelConfig
from nanollm.hf_gpt2 import export_hf_gpt2
from nanollm.loader import LoadedModel, ModelLoader, ModelNotFoundError
from nanollm.model import GPT
from nanollm.tokenizer import ByteTokenizer, GPT2Tokenizer

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=64)  # the size tiny_config uses


class NotAPlainObject:
    """Something only full unpickling can rebuild."""

    def __init__(self) -> None:
        self.value = 1


def _nanogpt_ckpt(model: GPT, path: Path, **extra: object) -> Path:
    """A ckpt.pt as nanoGPT's train.py writes it after torch.compile: `_orig_mod.` names."""
    c = model.config
    sd = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    for i in range(c.n_layer):  # older nanoGPT's causal-mask buffer
        sd[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(
            torch.ones(c.block_size, c.block_size)).view(1, 1, c.block_size, c.block_size)
    ckpt = {
        "model": sd,
        "model_args": dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                           block_size=c.block_size, bias=c.bias, vocab_size=c.vocab_size,
                           dropout=0.0),
        "iter_num": 250,
        "best_val_loss": torch.tensor(1.5),
        "config": {"dataset": "openwebtext", "batch_size": 12},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@torch.no_grad()
def _logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    return model(idx)[0]


def _isolate_lookup(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point every place find_pretrained searches into an empty tmp folder."""
    for var in ("NANOLLM_MODELS_DIR", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(root / "hf_home"))
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.chdir(root)


def _tiny_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a tiny model stand for 'gpt2' so lookup tests need no 500 MB of weights."""
    monkeypatch.setitem(ModelConfig.PRESETS, "gpt2", dict(n_layer=TINY["n_layer"],
                        n_head=TINY["n_head"], n_embd=TINY["n_embd"]))


# ----------------------------------------------------------------------------------------------
# nanoGPT


def test_nanogpt_ckpt_imports_with_orig_mod_prefixes(tiny_model: GPT, tmp_path: Path) -> None:
    path = _nanogpt_ckpt(tiny_model, tmp_path / "out" / "ckpt.pt")
    loaded = ModelLoader.load(path, device="cpu")
    assert loaded.kind == "nanogpt"
    assert isinstance(loaded.tokenizer, GPT2Tokenizer)
    idx = torch.randint(0, 50257, (2, 9))
    torch.testing.assert_close(_logits(loaded.model, idx), _logits(tiny_model, idx))
    # a folder holding ckpt.pt works too
    assert ModelLoader.load(path.parent, device="cpu").kind == "nanogpt"


def test_nanogpt_ckpt_with_pickled_custom_class_is_refused(tiny_model: GPT,
                                                           tmp_path: Path) -> None:
    path = _nanogpt_ckpt(tiny_model, tmp_path / "ckpt.pt", config=NotAPlainObject())
    with pytest.raises(CheckpointError) as err:
        ModelLoader.load(path, device="cpu")
    message = str(err.value)
    assert str(path) in message
    assert "weights_only=True" in message and "full unpickling" in message


def test_char_level_nanogpt_without_tokenizer_fails_clearly(tmp_path: Path) -> None:
    model = GPT(ModelConfig(**TINY, vocab_size=65))
    path = _nanogpt_ckpt(model, tmp_path / "ckpt.pt")
    (tmp_path / "meta.pkl").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"meta\.pkl"):
        ModelLoader.load(path, device="cpu")


def test_nanogpt_byte_model_when_the_ckpt_says_so(tmp_path: Path) -> None:
    model = GPT(ModelConfig(**TINY, vocab_size=320, bias=False))
    path = _nanogpt_ckpt(model, tmp_path / "ckpt.pt", tokenizer="byte")
    loaded = ModelLoader.load(path, device="cpu")
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert loaded.config.bias is False


def test_nanogpt_missing_model_args_names_the_field(tiny_model: GPT, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_model.state_dict(), "model_args": {"n_layer": 2}}, path)
    with pytest.raises(CheckpointError, match="n_head"):
        ModelLoader.load(path, device="cpu")


# ----------------------------------------------------------------------------------------------
# model_type lookup


def test_model_type_missing_locally_says_what_to_download(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_lookup(monkeypatch, tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        ModelLoader.load(model_type="gpt2-medium", device="cpu")
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert "huggingface-cli download gpt2-medium --local-dir models/gpt2-medium" in message
    assert "NANOLLM_MODELS_DIR" in message


def test_model_type_found_in_models_dir(tiny_hf_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_lookup(monkeypatch, tmp_path)
    _tiny_preset(monkeypatch)
    models = tmp_path / "my_models"
    shutil.copytree(tiny_hf_dir, models / "gpt2")
    monkeypatch.setenv("NANOLLM_MODELS_DIR", str(models))
    loaded = ModelLoader.load(model_type="gpt2", device="cpu")
    assert (loaded.kind, loaded.source) == ("huggingface", "gpt2")
    assert isinstance(loaded.tokenizer, GPT2Tokenizer)


def test_model_type_found_in_hf_hub_cache(tiny_hf_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_lookup(monkeypatch, tmp_path)
    _tiny_preset(monkeypatch)
    repo = tmp_path / "hf_home" / "hub" / "models--openai-community--gpt2"
    shutil.copytree(tiny_hf_dir, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert ModelLoader.load(model_type="gpt2", device="cpu").kind == "huggingface"


def test_model_type_folder_of_another_size_is_not_loaded(tiny_hf_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_lookup(monkeypatch, tmp_path)
    shutil.copytree(tiny_hf_dir, tmp_path / "models" / "gpt2")  # ./models/gpt2, but tiny
    with pytest.raises(CheckpointError, match="holds a model with"):
        ModelLoader.load(model_type="gpt2", device="cpu")


def test_unknown_model_type() -> None:
    with pytest.raises(ValueError, match="gpt2-xl"):
        ModelLoader.load(model_type="gpt3")


# ----------------------------------------------------------------------------------------------
# argument rules and sources


def test_both_arguments_is_an_error(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        ModelLoader.load(tiny_checkpoint, model_type="gpt2")


def test_neither_argument_loads_the_default(tiny_checkpoint: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelLoader, "default_checkpoint", staticmethod(lambda: tiny_checkpoint))
    loaded = ModelLoader.load(device="cpu")
    assert (loaded.kind, loaded.source) == ("nanollm", str(tiny_checkpoint))


def test_neither_argument_without_a_demo_model_fails_clearly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelLoader, "default_checkpoint", staticmethod(lambda: tmp_path / "no"))
    with pytest.raises(ModelNotFoundError, match="demo model"):
        ModelLoader.load(device="cpu")


def test_shipped_demo_model_loads_when_present() -> None:
    if not (ModelLoader.default_checkpoint() / "config.json").is_file():
        pytest.skip("the demo model has not been built into nanollm/assets/demo yet")
    loaded = ModelLoader.load(device="cpu")
    assert loaded.kind == "nanollm"


def test_missing_path_and_unrecognised_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        ModelLoader.load(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ModelLoader.load(tmp_path / "junk")
    (tmp_path / "junk" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="llama"):
        ModelLoader.load(tmp_path / "junk")


def test_loaded_model_is_ready_for_inference(tiny_checkpoint: Path, tiny_model: GPT) -> None:
    loaded = ModelLoader.load(tiny_checkpoint, device="cpu", dtype="float32")
    assert isinstance(loaded, LoadedModel)
    model = loaded.model
    assert not model.training
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied
    idx = torch.randint(0, 50257, (1, 5))
    torch.testing.assert_close(_logits(model, idx), _logits(tiny_model, idx))
    cached = model.forward_cached(idx, model.new_cache(1))  # (1, V), the inference path
    torch.testing.assert_close(cached, _logits(tiny_model, idx)[:, -1], atol=1e-4, rtol=0)
    assert isinstance(ModelLoader.load_model(tiny_checkpoint, device="cpu"), GPT)


def test_dtype(tiny_checkpoint: Path) -> None:
    model = ModelLoader.load_model(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert isinstance(model, GPT)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype"):
        ModelLoader.load(tiny_checkpoint, device="cpu", dtype="float8")


def test_compile_is_refused_for_inference(tiny_checkpoint: Path) -> None:
    # model.compile() would wrap forward() only; generation runs forward_cached, uncompiled.
    with pytest.raises(ValueError) as exc_info:
        ModelLoader.load(tiny_checkpoint, device="cpu", compile=True)
    assert str(exc_info.value) == (
        "compile=True is not supported for inference: torch.compile wraps the model's training "
        "forward(), which generation never calls; compile applies to training "
        "(TrainingConfig.compile, gpt-train --compile)")


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu'; choose 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("cuda:x", "unknown device 'cuda:x'; choose 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_unknown_device_is_refused_before_reading(tmp_path: Path, device: str,
                                                  message: str) -> None:
    # The path does not exist: the device is checked first, before any file is read.
    with pytest.raises(ValueError) as exc_info:
        ModelLoader.load(tmp_path / "missing", device=device)
    assert str(exc_info.value) == message


# ----------------------------------------------------------------------------------------------
# tokenizers


def test_byte_tokenizer_checkpoint_gives_byte_tokenizer(tmp_path: Path) -> None:
    model = GPT(ModelConfig(**TINY, vocab_size=257, tokenizer="byte"))
    path = save_checkpoint(tmp_path / "byte", model.state_dict(), model.config)
    tok = ModelLoader.load(path, device="cpu").tokenizer
    assert isinstance(tok, ByteTokenizer)
    text = "héllo, wörld"
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_tokenizer_round_trip(tiny_checkpoint: Path) -> None:
    tok = ModelLoader.load(tiny_checkpoint, device="cpu").tokenizer
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.decode(tok.encode("ROMEO: O, she doth")) == "ROMEO: O, she doth"


def test_tokenizer_larger_than_the_vocab_is_refused(tmp_path: Path) -> None:
    model = GPT(ModelConfig(**TINY, vocab_size=300, tokenizer="byte"))
    path = export_hf_gpt2(tmp_path / "hf", model.state_dict(), model.config)
    cfg = json.loads((path / "config.json").read_text())
    cfg["nanollm_tokenizer"] = "gpt2"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="50257 tokens"):
        ModelLoader.load(path, device="cpu")
