"""Shared fixtures: tiny models and checkpoints that build in well under a second."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.model import GPT

# Tests never reach the network; transformers must not try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=64)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """2 layers, 32 wide, GPT-2 vocabulary (so the gpt2 tokenizer fits)."""
    return ModelConfig(**TINY, vocab_size=50257, tokenizer="gpt2")


@pytest.fixture
def tiny_model(tiny_config: ModelConfig) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config).eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_model: GPT) -> Path:
    """A nanoLLM checkpoint folder of tiny_model with the gpt2 tokenizer."""
    return save_checkpoint(tmp_path / "tiny_ckpt", tiny_model.state_dict(), tiny_model.config,
                           tokenizer="gpt2", provenance={"note": "test fixture"})


@pytest.fixture
def tiny_hf_dir(tmp_path: Path) -> Path:
    """A random, seeded transformers GPT2LMHeadModel saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=TINY["n_layer"], n_head=TINY["n_head"],
                                        n_embd=TINY["n_embd"], n_positions=TINY["block_size"],
                                        vocab_size=50257)
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    out = tmp_path / "tiny_hf"
    model.save_pretrained(out)
    return out
