"""nanoLLM checkpoint folders: round trip, atomic saves, and errors that name the bad file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import nanollm.checkpoint as checkpoint_module
from nanollm.checkpoint import (
    CheckpointError,
    is_checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from nanollm.config import ModelConfig
from nanollm.model import GPT


class Custom:
    """A class only full unpickling can rebuild."""


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _leftovers(folder: Path) -> list[str]:
    """Temp or moved-aside folders a save may leave next to the checkpoint."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_round_trip_weights_config_provenance_trainer_state(tiny_model: GPT,
                                                            tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(7)
    trainer_state = {
        "step": 120,
        "best_val_loss": 2.25,
        "optimizer": {"state": {0: {"exp_avg": torch.randn(3, 4)}}, "param_groups": [{"lr": 3e-4}]},
        "rng": {"torch": torch.get_rng_state(), "sampler": gen.get_state(),
                "numpy": [1, 2, 3]},
        "data_position": [4, 5],
    }
    provenance = {"command": "gpt-train --max_iters 120", "dataset": "shakespeare"}
    path = save_checkpoint(tmp_path / "ckpt", tiny_model.state_dict(), tiny_model.config,
                           provenance=provenance, trainer_state=trainer_state)
    assert is_checkpoint_dir(path)

    ckpt = load_checkpoint(path, with_trainer_state=True)
    assert ckpt.config == tiny_model.config
    assert ckpt.tokenizer == "gpt2"
    assert ckpt.provenance == provenance
    expected = {k: v for k, v in tiny_model.state_dict().items() if k != "lm_head.weight"}
    assert _same_weights(ckpt.state_dict, expected)
    state = ckpt.trainer_state
    assert state is not None
    assert (state["step"], state["best_val_loss"], state["data_position"]) == (120, 2.25, [4, 5])
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"],
                       trainer_state["optimizer"]["state"][0]["exp_avg"])
    assert torch.equal(state["rng"]["torch"], trainer_state["rng"]["torch"])
    restored = torch.Generator().set_state(state["rng"]["sampler"])
    assert torch.equal(torch.rand(3, generator=restored), torch.rand(3, generator=gen))
    assert load_checkpoint(path).trainer_state is None  # only read when asked for


def test_saved_weights_never_carry_wrapper_prefixes(tiny_model: GPT, tmp_path: Path) -> None:
    compiled = torch.compile(tiny_model)  # wraps lazily: names gain `_orig_mod.`, nothing compiles
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    prefixed = {f"module.{k}": v for k, v in compiled.state_dict().items()}
    path = save_checkpoint(tmp_path / "ckpt", prefixed, tiny_model.config)
    names = load_file(str(path / "model.safetensors")).keys()
    assert not [n for n in names if "_orig_mod." in n or "module." in n]
    assert "lm_head.weight" not in names  # tied to wte, stored once
    load_checkpoint(path)


def test_failed_save_keeps_the_previous_checkpoint(tiny_model: GPT, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "latest", tiny_model.state_dict(), tiny_model.config,
                           provenance={"step": 1})
    before = load_checkpoint(path).state_dict
    real_save_file = checkpoint_module.save_file

    def save_then_crash(*args: object, **kwargs: object) -> None:
        real_save_file(*args, **kwargs)  # the file is written...
        raise OSError("disk full")  # ...then the save dies

    monkeypatch.setattr(checkpoint_module, "save_file", save_then_crash)
    other = {k: torch.zeros_like(v) for k, v in tiny_model.state_dict().items()}
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, other, tiny_model.config, provenance={"step": 2})

    ckpt = load_checkpoint(path)
    assert ckpt.provenance == {"step": 1}
    assert _same_weights(ckpt.state_dict, before)
    assert _leftovers(tmp_path) == []


def test_failed_rename_puts_the_previous_checkpoint_back(tiny_model: GPT, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "latest", tiny_model.state_dict(), tiny_model.config,
                           provenance={"step": 1})
    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        if Path(src).name.startswith(".latest.tmp-"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        save_checkpoint(path, tiny_model.state_dict(), tiny_model.config, provenance={"step": 2})
    assert load_checkpoint(path).provenance == {"step": 1}
    assert _leftovers(tmp_path) == []


def test_overwrite_replaces_and_cleans_up(tiny_model: GPT, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "latest", tiny_model.state_dict(), tiny_model.config,
                           provenance={"step": 1})
    save_checkpoint(path, tiny_model.state_dict(), tiny_model.config, provenance={"step": 2})
    assert load_checkpoint(path).provenance == {"step": 2}
    assert _leftovers(tmp_path) == []


def test_corrupt_weights_name_the_file(tiny_checkpoint: Path) -> None:
    weights = tiny_checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_checkpoint(tiny_checkpoint)
    weights.write_bytes(b"\xff" * 64)  # garbage header
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt"):
        load_checkpoint(tiny_checkpoint)


def test_missing_files_name_the_file(tiny_checkpoint: Path) -> None:
    (tiny_checkpoint / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_checkpoint(tiny_checkpoint)
    (tiny_checkpoint / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_checkpoint(tiny_checkpoint)


def test_invalid_json_names_the_file(tiny_checkpoint: Path) -> None:
    (tiny_checkpoint / "config.json").write_text('{"format": "nanollm-checkpoint",')
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_checkpoint(tiny_checkpoint)


def test_invalid_model_config_names_the_field(tiny_checkpoint: Path) -> None:
    cfg_path = tiny_checkpoint / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["model"]["n_head"] = 3  # 32 is not divisible by 3
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json: invalid model config.*n_head"):
        load_checkpoint(tiny_checkpoint)


def test_shape_mismatch_names_the_tensor(tiny_checkpoint: Path) -> None:
    cfg_path = tiny_checkpoint / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["model"]["block_size"] = 128  # the stored wpe has 64 rows
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError,
                       match=r"model\.safetensors: transformer\.wpe\.weight has shape"):
        load_checkpoint(tiny_checkpoint)


def test_missing_tensors_are_listed(tmp_path: Path) -> None:
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=257)
    sd = {k: v for k, v in GPT(config).state_dict().items() if ".h.1." not in k}
    save_checkpoint(tmp_path / "ckpt", sd, config)
    with pytest.raises(CheckpointError, match=r"missing \['transformer\.h\.1\."):
        load_checkpoint(tmp_path / "ckpt")


class MakesADirectory:
    """Unpickling this would call os.mkdir: what a malicious checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.target),))


def _nanogpt_file(model: GPT, path: Path, extra: object) -> Path:
    c = model.config
    torch.save({"model": model.state_dict(), "extra": extra,
                "model_args": dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                   block_size=c.block_size, vocab_size=c.vocab_size)}, path)
    return path


@pytest.mark.parametrize("where", ["trainer_state.pt", "nanogpt ckpt.pt"])
@pytest.mark.parametrize(("payload", "named"), [
    ("os.mkdir", "posix.mkdir"),  # a module torch blocks outright
    ("class", "test_checkpoint.Custom"),  # a class it does not allow
    ("eval", "eval"),  # a builtin function
])
def test_pickled_objects_are_refused_naming_the_global_without_torch_advice(
        tiny_model: GPT, tmp_path: Path, where: str, payload: str, named: str) -> None:
    marker = tmp_path / "payload-ran"
    extra = {"os.mkdir": MakesADirectory(marker), "class": Custom(),
             "eval": Evaluates()}[payload]
    if where == "trainer_state.pt":
        path = save_checkpoint(tmp_path / "ckpt", tiny_model.state_dict(), tiny_model.config,
                               trainer_state={"step": 1, "extra": extra})
        load_checkpoint(path)  # the weights alone still load
        bad_file = path / "trainer_state.pt"
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path, with_trainer_state=True)
    else:
        from nanollm.nanogpt_import import load_nanogpt

        bad_file = _nanogpt_file(tiny_model, tmp_path / "ckpt.pt", extra)
        with pytest.raises(CheckpointError) as err:
            load_nanogpt(bad_file)
    message = str(err.value)
    assert message.startswith(f"{bad_file}: holds objects that are not allowed in a checkpoint "
                              f"({named.replace('test_checkpoint', Custom.__module__)}); ")
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "Re-running" not in message and "trust" not in message
    assert err.value.__suppress_context__  # torch's advice is not printed with a traceback
    assert not marker.exists()


class Evaluates:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("1 + 1",))


def test_saved_files_are_readable_by_others(tmp_path: Path, tiny_model) -> None:
    import stat

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ck", tiny_model.state_dict(), tiny_model.config)
    finally:
        os.umask(old)
    for file in path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


def test_crash_between_renames_is_recovered_by_the_next_save_not_by_readers(
        tmp_path: Path, tiny_model) -> None:
    """A replace killed after moving the old checkpoint aside leaves only `.latest.old-*`.
    Readers leave it alone; the next save puts it back before replacing it."""
    path = save_checkpoint(tmp_path / "latest", tiny_model.state_dict(), tiny_model.config)
    aside = tmp_path / ".latest.old-deadbeef"  # the name older versions gave it
    os.replace(path, aside)
    assert not is_checkpoint_dir(path)
    with pytest.raises(CheckpointError, match=r"latest: no such checkpoint folder"):
        load_checkpoint(path)
    assert _leftovers(tmp_path) == [aside.name] and not path.exists()

    checkpoint_module.recover_interrupted_save(path)
    assert load_checkpoint(path).config == tiny_model.config
    assert _leftovers(tmp_path) == []
