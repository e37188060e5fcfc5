"""Whole runs in-process: exact resume, checkpoints, the event log and the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from nanollm.checkpoint import load_checkpoint
from nanollm.config import ConfigError
from nanollm.config_io import build_config
from trainer import train
from trainer.events import read_events
from trainer.run_config import resolve_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _losses(out_dir: str | Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(out_dir) if e["type"] == "step"}


def test_resume_is_exact(tiny_train_config, tmp_path: Path) -> None:
    # dropout > 0: the RNG streams must be restored too, not only weights and optimizer.
    common = dict(max_iters=8, lr_decay_iters=8, model={"dropout": 0.1})
    full = train(tiny_train_config(out_dir=str(tmp_path / "full"), **common))
    half = tiny_train_config(out_dir=str(tmp_path / "split"), **{**common, "max_iters": 4})
    first = train(half)
    assert first.step == 4
    second = train(half.replace(init_from="resume", max_iters=8))
    assert second.step == full.step == 8
    want, got = _losses(tmp_path / "full"), _losses(tmp_path / "split")
    assert sorted(want) == sorted(got) == list(range(1, 9))
    for step in want:
        assert abs(want[step] - got[step]) < 1e-6, (step, want[step], got[step])
    assert abs(full.best_val_loss - second.best_val_loss) < 1e-6


def test_run_folder_and_events(tiny_train_config, tmp_path: Path) -> None:
    cfg = tiny_train_config(max_iters=6, eval_interval=3, log_interval=2)
    result = train(cfg)
    out = Path(cfg.out_dir)
    assert {p.name for p in out.iterdir()} >= {"latest", "best", "events.jsonl", "train.log",
                                                "train_config.yaml"}
    events = read_events(out)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end"
    assert [e["step"] for e in events if e["type"] == "step"] == [2, 4, 6]
    assert [e["step"] for e in events if e["type"] == "eval"] == [3, 6]
    step = next(e for e in events if e["type"] == "step")
    assert {"loss", "lr", "grad_norm", "tokens_per_sec", "mfu", "time"} <= set(step)
    assert events[-1]["interrupted"] is False and events[-1]["reason"] == "completed"
    assert all(json.loads(line) for line in (out / "events.jsonl").read_text().splitlines())
    # the saved config reproduces the run (the vocabulary came from the dataset)
    saved = build_config(type(cfg), out / "train_config.yaml")
    assert saved.model.vocab_size == 257 and saved.model.tokenizer == "byte"
    assert saved.max_iters == 6
    # checkpoints: loadable, no wrapper prefixes, trainer state only in latest
    latest = load_checkpoint(out / "latest", with_trainer_state=True)
    assert latest.trainer_state is not None and latest.trainer_state["step"] == 6
    assert latest.provenance["val_loss"] == pytest.approx(result.last_val_loss)
    assert not (out / "best" / "trainer_state.pt").exists()
    names = load_file(str(out / "latest" / "model.safetensors"))
    assert not any(n.startswith(("_orig_mod.", "module.")) for n in names)
    assert "train loss" in (out / "train.log").read_text()


def test_best_is_not_overwritten_by_a_worse_model(tiny_train_config, tmp_path: Path) -> None:
    cfg = tiny_train_config(max_iters=8, eval_interval=4)
    good = train(cfg)
    best_before = (Path(cfg.out_dir) / "best" / "model.safetensors").read_bytes()
    # Resume with an absurd learning rate: val loss gets worse, best/ must stay as it was.
    worse = cfg.replace(init_from="resume", max_iters=12, learning_rate=5.0, min_lr=5.0,
                        grad_clip=0.0)
    result = train(worse)
    evals = [e for e in read_events(cfg.out_dir) if e["type"] == "eval"]
    assert evals[-1]["step"] == 12 and evals[-1]["val_loss"] > good.best_val_loss
    assert evals[-1]["improved"] is False
    assert (Path(cfg.out_dir) / "best" / "model.safetensors").read_bytes() == best_before
    assert load_checkpoint(Path(cfg.out_dir) / "best").provenance["step"] == 8
    assert load_checkpoint(Path(cfg.out_dir) / "latest").provenance["step"] == 12
    assert result.best_val_loss == pytest.approx(good.best_val_loss)


def test_resume_takes_the_saved_settings(tiny_train_config, tmp_path: Path) -> None:
    cfg = tiny_train_config(max_iters=4, batch_size=3, learning_rate=2e-3)
    train(cfg)
    # only --init-from, --out-dir and a new --max-iters are given; the rest comes from the run
    resumed = resolve_config(None, {"init_from": "resume", "out_dir": cfg.out_dir,
                                    "max_iters": 6})
    assert (resumed.batch_size, resumed.learning_rate, resumed.max_iters) == (3, 2e-3, 6)
    assert resumed.data_path == cfg.data_path and resumed.init_from == "resume"
    text = yaml.safe_load((Path(cfg.out_dir) / "train_config.yaml").read_text())
    assert text["batch_size"] == 3


def test_a_new_run_refuses_a_folder_that_holds_one(tiny_train_config) -> None:
    cfg = tiny_train_config(max_iters=2, eval_interval=2)
    train(cfg)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)  # would mix two runs' events and best/; resume or pick another out_dir


@pytest.mark.slow
def test_compiled_run_saves_plain_names(tiny_train_config) -> None:
    cfg = tiny_train_config(max_iters=2, eval_interval=2, compile=True)
    train(cfg)
    names = load_file(str(Path(cfg.out_dir) / "latest" / "model.safetensors"))
    assert names and not any("_orig_mod" in n for n in names)
