"""Shared fixtures: tiny models and checkpoints that build in well under a second."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig, TrainingConfig
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


# ----------------------------------------------------------------------------------------------
# trainer fixtures


@pytest.fixture(scope="session")
def byte_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared byte-level dataset folder: the first 64 KB of the bundled corpus."""
    from nanollm.data import DataPreparer

    root = tmp_path_factory.mktemp("byte_dataset")
    corpus = Path(__file__).parent.parent / "nanollm" / "assets" / "corpus" / "shakespeare.txt"
    text = root / "shakespeare_64k.txt"
    text.write_bytes(corpus.read_bytes()[: 64 * 1024])
    return DataPreparer("byte").prepare_data(text, output_dir=root / "data", block_size=32,
                                             show_progress=False)


@pytest.fixture
def tiny_train_config(byte_dataset: Path, tmp_path: Path) -> Callable[..., TrainingConfig]:
    """A factory of small, fast TrainingConfigs on byte_dataset writing under tmp_path."""

    def make(**overrides: object) -> TrainingConfig:
        model = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, tokenizer="byte",
                     dropout=0.0)
        model.update(overrides.pop("model", {}))  # type: ignore[arg-type]
        args: dict[str, object] = dict(
            data_path=str(byte_dataset), out_dir=str(tmp_path / "run"), max_iters=8,
            batch_size=4, eval_interval=4, eval_iters=2, log_interval=1, warmup_iters=2,
            learning_rate=3e-3, min_lr=3e-4, device="cpu", dtype="float32", progress=False,
            seed=1234)
        args.update(overrides)
        return TrainingConfig(model=ModelConfig(**model), **args)  # type: ignore[arg-type]

    return make


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test on one torch thread: on a busy 2-core machine two spinning threads per op can
    make small-model training ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
