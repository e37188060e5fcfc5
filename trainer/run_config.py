"""The configuration of a run: file + flags, and on resume the run's own saved configuration.

Precedence: defaults < the saved config of the run being resumed < --config file < flags given.
So `gpt-train --init-from resume --out-dir out/x` continues with exactly the settings the run
had, and any flag given (e.g. a larger --max-iters) changes just that setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nanollm.checkpoint import (
    is_checkpoint_dir,
    read_checkpoint_config,
    recover_interrupted_save,
)
from nanollm.config import TrainingConfig
from nanollm.config_io import build_config, merge_dicts, read_config_file

RUN_CONFIG_FILE = "train_config.yaml"


def saved_train_config(checkpoint_dir: Path) -> dict[str, Any] | None:
    """The TrainingConfig a checkpoint was written with (kept in its provenance)."""
    if not is_checkpoint_dir(checkpoint_dir):
        return None
    _, meta = read_checkpoint_config(checkpoint_dir)
    saved = meta.get("provenance", {}).get("train_config")
    return saved if isinstance(saved, dict) else None


def resolve_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainingConfig:
    """build_config, plus the resumed run's saved settings underneath when init_from=resume."""
    cfg = build_config(TrainingConfig, path, overrides)
    if cfg.init_from != "resume":
        return cfg
    out = Path(cfg.out_dir).expanduser()
    # A resumed run is its folder's writer: a save killed between its two renames left latest/
    # (or best/) moved aside under a hidden name; put it back before reading it.
    for name in ("latest", "best"):
        recover_interrupted_save(out / name)
    saved = saved_train_config(out / "latest")
    if saved is None:
        return cfg  # preflight reports the missing checkpoint
    given = merge_dicts(read_config_file(path) if path else {}, overrides)
    merged = merge_dicts(saved, given)
    merged["init_from"] = "resume"
    merged["out_dir"] = cfg.out_dir
    return TrainingConfig.from_dict(merged)


def given_model_fields(path: str | Path | None, overrides: dict[str, Any]) -> set[str]:
    """ModelConfig fields set by the --config file or by flags (not by a resumed run's saved
    settings): on resume and fine-tune these must fit the checkpoint (trainer/model_shape.py)."""
    file_model = (read_config_file(path) if path else {}).get("model")
    names = set(file_model) if isinstance(file_model, dict) else set()
    return names | set(overrides.get("model", {}))


def write_run_config(cfg: TrainingConfig, out_dir: str | Path) -> Path:
    """`<out_dir>/train_config.yaml`: the resolved settings; `gpt-train --config` reads it."""
    path = Path(out_dir) / RUN_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Resolved configuration of this run (gpt-train --config reads it).\n"
    text += yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path
