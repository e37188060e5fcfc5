"""nanoLLM core library: GPT-2 model, tokenizer, checkpoints, data preparation and inference.

    from nanollm import InferencePipeline, GenerationConfig
    pipe = InferencePipeline(device="auto")
    pipe.load_model(checkpoint_path="out/ckpt")
    print(pipe.generate("Once upon a time", GenerationConfig(max_new_tokens=50)))

Names are imported on first use, so `import nanollm` stays cheap and a tool that needs only the
config classes does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "GPT": "nanollm.model",
    "GPTConfig": "nanollm.model",
    "ModelConfig": "nanollm.config",
    "TrainingConfig": "nanollm.config",
    "GenerationConfig": "nanollm.config",
    "ServerConfig": "nanollm.server_config",
    "ConfigError": "nanollm.config",
    "InferencePipeline": "nanollm.pipeline",
    "ModelLoader": "nanollm.loader",
    "DataPreparer": "nanollm.data",
    "load_tokenizer": "nanollm.tokenizer",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from nanollm.config import (
        ConfigError,
        GenerationConfig,
        ModelConfig,
        TrainingConfig,
    )
    from nanollm.data import DataPreparer
    from nanollm.loader import ModelLoader
    from nanollm.model import GPT, GPTConfig
    from nanollm.pipeline import InferencePipeline
    from nanollm.server_config import ServerConfig
    from nanollm.tokenizer import load_tokenizer


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nanollm' has no attribute {name!r}")
