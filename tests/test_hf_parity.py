"""HuggingFace GPT-2 import and export agree with transformers' own GPT2LMHeadModel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import CheckpointError, save_checkpoint
from nanollm.config import ModelConfig
from nanollm.export_cli import main as export_main
from nanollm.hf_gpt2 import export_hf_gpt2
from nanollm.loader import ModelLoader
from nanollm.model import GPT
from nanollm.tokenizer import ByteTokenizer, GPT2Tokenizer

transformers = pytest.importorskip("transformers")


def _tokens(vocab: int = 50257, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, 17), generator=g)  # (B, T)


@torch.no_grad()
def _hf_last_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    return model(idx).logits[:, -1, :]  # (B, V)


@torch.no_grad()
def _our_last_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    logits, _ = model(idx)  # (B, 1, V)
    return logits[:, -1, :]


def test_hf_safetensors_folder_matches_transformers(tiny_hf_dir: Path) -> None:
    loaded = ModelLoader.load(tiny_hf_dir, device="cpu", dtype="float32")
    assert loaded.kind == "huggingface"
    assert isinstance(loaded.tokenizer, GPT2Tokenizer)
    idx = _tokens()
    ref = _hf_last_logits(tiny_hf_dir, idx)
    torch.testing.assert_close(_our_last_logits(loaded.model, idx), ref, atol=1e-4, rtol=0)
    # the KV-cache path reads the same weights
    cache = loaded.model.new_cache(2)
    torch.testing.assert_close(loaded.model.forward_cached(idx, cache), ref, atol=1e-4, rtol=0)


def test_hf_pytorch_model_bin_hub_layout(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """The layout of the hub's original gpt2 pytorch_model.bin: no `transformer.` prefix, mask
    buffers, and a stored (tied) lm_head.weight."""
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_hf_dir)
    T = hf.config.n_positions
    sd = {k.removeprefix("transformer."): v.clone() for k, v in hf.state_dict().items()}
    for i in range(hf.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    folder = tmp_path / "bin_variant"
    folder.mkdir()
    torch.save(sd, folder / "pytorch_model.bin")
    (folder / "config.json").write_text((tiny_hf_dir / "config.json").read_text())

    loaded = ModelLoader.load(folder, device="cpu", dtype="float32")
    idx = _tokens(seed=2)
    torch.testing.assert_close(_our_last_logits(loaded.model, idx),
                               _hf_last_logits(tiny_hf_dir, idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_export_loads_in_transformers_with_same_logits(tmp_path: Path, bias: bool) -> None:
    torch.manual_seed(3)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50304,
                            bias=bias)).eval()
    with torch.no_grad():  # random, non-zero biases and LayerNorm weights, so they are tested
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    out = export_hf_gpt2(tmp_path / "hf", model.state_dict(), model.config)
    idx = _tokens(seed=4)
    torch.testing.assert_close(_hf_last_logits(out, idx), _our_last_logits(model, idx),
                               atol=1e-4, rtol=0)
    # and nanoLLM reads its own export back
    again = ModelLoader.load(out, device="cpu", dtype="float32")
    torch.testing.assert_close(_our_last_logits(again.model, idx), _our_last_logits(model, idx),
                               atol=1e-5, rtol=0)


def test_exported_tokenizer_loads_in_transformers(tiny_model: GPT, tmp_path: Path) -> None:
    out = export_hf_gpt2(tmp_path / "hf", tiny_model.state_dict(), tiny_model.config)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "vocab.json",
            "merges.txt", "tokenizer_config.json"} <= names
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eos_token_id == 50256
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 50256


def test_byte_tokenizer_model_round_trips_through_hf(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=257,
                            tokenizer="byte"))
    out = export_hf_gpt2(tmp_path / "hf", model.state_dict(), model.config)
    assert not (out / "vocab.json").exists()  # no HF tokenizer for bytes
    loaded = ModelLoader.load(out, device="cpu")
    assert isinstance(loaded.tokenizer, ByteTokenizer)
    assert transformers.GPT2LMHeadModel.from_pretrained(out).config.eos_token_id == 256


@pytest.mark.parametrize("field, value", [
    ("activation_function", "relu"),
    ("layer_norm_epsilon", 1e-6),
    ("scale_attn_by_inverse_layer_idx", True),
    ("scale_attn_weights", False),
    ("n_inner", 100),
    ("add_cross_attention", True),
    ("model_type", "gpt_neo"),
])
def test_unsupported_hf_config_is_refused_naming_the_field(tiny_hf_dir: Path, field: str,
                                                          value: object) -> None:
    cfg_path = tiny_hf_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[field] = value
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=field):
        ModelLoader.load(tiny_hf_dir, device="cpu")


def test_untied_lm_head_is_refused(tiny_hf_dir: Path, tmp_path: Path) -> None:
    hf = transformers.GPT2LMHeadModel.from_pretrained(tiny_hf_dir)
    sd = {k: v.clone() for k, v in hf.state_dict().items()}
    sd["lm_head.weight"] = torch.randn_like(sd["lm_head.weight"])
    torch.save(sd, tiny_hf_dir / "pytorch_model.bin")
    (tiny_hf_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"lm_head\.weight differs"):
        ModelLoader.load(tiny_hf_dir, device="cpu")


def test_hf_folder_without_weights_names_the_files(tiny_hf_dir: Path) -> None:
    (tiny_hf_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights found.*model\.safetensors"):
        ModelLoader.load(tiny_hf_dir, device="cpu")


def test_gpt_export_cli(tiny_model: GPT, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = save_checkpoint(tmp_path / "ckpt", tiny_model.state_dict(), tiny_model.config)
    out = tmp_path / "exported"
    assert export_main([str(ckpt), str(out), "--dtype", "bfloat16"]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert hf.transformer.wte.weight.dtype == torch.bfloat16
    assert export_main([str(ckpt), str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert export_main([str(ckpt), str(out), "--force"]) == 0
    assert export_main([str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err


def test_gpt_export_help_explains_every_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        export_main(["--help"])
    text = capsys.readouterr().out
    for flag in ("checkpoint", "out_dir", "--dtype", "--force"):
        assert flag in text


def _shard_folder(tiny_hf_dir: Path, shard_name: str) -> Path:
    """tiny_hf_dir with its weights listed by model.safetensors.index.json as `shard_name`."""
    from safetensors.torch import load_file

    keys = load_file(str(tiny_hf_dir / "model.safetensors")).keys()
    index = {"metadata": {}, "weight_map": {k: shard_name for k in keys}}
    (tiny_hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    (tiny_hf_dir / "model.safetensors").rename(tiny_hf_dir / "model-00001-of-00001.safetensors")
    return tiny_hf_dir


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd",
                                  "sub/../../model.safetensors", "..\\..\\x.safetensors"])
def test_shard_index_cannot_name_files_outside_the_folder(tiny_hf_dir: Path, name: str) -> None:
    folder = _shard_folder(tiny_hf_dir, name)
    with pytest.raises(CheckpointError) as info:
        ModelLoader.load(folder, device="cpu")
    index = folder / "model.safetensors.index.json"
    assert str(info.value) == (f"{index}: file name {name!r} (listed in {index.name}) is not a "
                               f"plain name inside {folder}")


def test_weight_links_out_of_the_folder_are_refused(tiny_hf_dir: Path, tmp_path: Path) -> None:
    folder = _shard_folder(tiny_hf_dir, "model-00001-of-00001.safetensors")
    ModelLoader.load(folder, device="cpu")  # the plain sharded folder loads
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "model-00001-of-00001.safetensors").rename(outside)
    (folder / "model-00001-of-00001.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError) as info:
        ModelLoader.load(folder, device="cpu")
    assert str(info.value) == (
        f"{folder / 'model-00001-of-00001.safetensors'} (listed in model.safetensors.index.json)"
        f": leads to {outside}, outside {folder}; weight files must be inside the model folder")
    (folder / "model.safetensors.index.json").unlink()
    (folder / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: leads to .*, outside "):
        ModelLoader.load(folder, device="cpu")


def test_hub_cache_snapshot_links_into_blobs_load(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """The hub cache's layout: snapshots/<rev>/<file> -> ../../blobs/<hash>."""
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(tiny_hf_dir.iterdir())):
        file.rename(repo / "blobs" / f"blob{i}")
        (snapshot / file.name).symlink_to(Path("../../blobs") / f"blob{i}")
    loaded = ModelLoader.load(snapshot, device="cpu", dtype="float32")
    assert loaded.kind == "huggingface"
