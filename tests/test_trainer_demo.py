"""The shipped demo model: present, small, loadable, and described by its README."""

from __future__ import annotations

import json

import pytest

from nanollm.loader import ModelLoader

DEMO = ModelLoader.default_checkpoint()


@pytest.mark.skipif(not (DEMO / "config.json").is_file(),
                    reason="demo model not built (make demo-model)")
def test_demo_model_is_small_loadable_and_documented() -> None:
    assert sum(p.stat().st_size for p in DEMO.iterdir()) <= 20 * 2**20
    loaded = ModelLoader.load(device="cpu", dtype="float32")  # no argument: the demo
    assert loaded.tokenizer.name == "byte" and loaded.config.block_size == 256
    val_loss = json.loads((DEMO / "config.json").read_text())["provenance"]["val_loss"]
    readme = (DEMO / "README.md").read_text()
    assert f"{val_loss:.4f}" in readme  # the README quotes the checkpoint's own val loss
    assert "gpt-train --config config/train_demo.yaml" in readme
    assert "make demo-model" in readme
