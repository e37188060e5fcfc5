"""`data_path` -> an opened, prepared dataset.

`data_path` may be a prepared dataset folder (train.bin, val.bin, meta.json), or a text file,
a folder of text files or an http(s) URL, which is tokenized with the model's tokenizer into
`<data_dir>/<name>-<tokenizer>` (reused when the input has not changed). Under torchrun the
local rank 0 of each machine prepares while the other ranks wait at a barrier.
"""

from __future__ import annotations

from pathlib import Path

from nanollm.config import TrainingConfig
from nanollm.data import DataPreparer
from nanollm.dataset import PreparedDataset, is_dataset_dir, open_dataset
from nanollm.text_sources import is_url, source_stem
from trainer.distributed import DistContext


def canonical_tokenizer(name: str) -> str:
    """'char' is another name of the byte tokenizer; compare tokenizers by this."""
    return "byte" if name == "char" else name


def prepared_dir(cfg: TrainingConfig, tokenizer: str) -> Path:
    """Where a raw `data_path` is prepared for `tokenizer`."""
    if cfg.data_path is None:
        raise ValueError("TrainingConfig.data_path is not set; give --data-path")
    return Path(cfg.data_dir) / f"{source_stem(cfg.data_path)}-{canonical_tokenizer(tokenizer)}"


def needs_preparation(data_path: str) -> bool:
    return is_url(data_path) or not is_dataset_dir(data_path)


def load_dataset(cfg: TrainingConfig, tokenizer: str, block_size: int, ctx: DistContext, *,
                 show_progress: bool) -> PreparedDataset:
    """Open (preparing first if needed) the dataset named by cfg.data_path; a raw input is
    tokenized with `tokenizer` and must give both splits at least block_size + 1 tokens."""
    data_path = cfg.data_path
    if data_path is None:
        raise ValueError("TrainingConfig.data_path is not set; give --data-path")
    if not needs_preparation(data_path):
        return open_dataset(data_path)
    target = prepared_dir(cfg, tokenizer)
    if ctx.local_rank == 0:
        preparer = DataPreparer(canonical_tokenizer(tokenizer),
                                allow_private_urls=cfg.allow_private_urls)
        preparer.prepare_data(
            data_path, output_dir=target, train_val_split=cfg.train_val_split,
            block_size=block_size, show_progress=show_progress)
    ctx.barrier()
    return open_dataset(target)


def ignored_split_note(cfg: TrainingConfig, dataset: PreparedDataset) -> str | None:
    """A note when cfg.train_val_split cannot apply: a prepared dataset keeps the split it was
    made with (rather than being silently used with another)."""
    made_with = dataset.meta.get("train_val_split")
    if cfg.data_path is None or needs_preparation(cfg.data_path) or made_with is None or \
            made_with == cfg.train_val_split:
        return None
    return (f"note: {dataset.path} is a prepared dataset, split {made_with} when it was made; "
            f"train_val_split {cfg.train_val_split} does not apply (give the raw text as "
            "--data-path to split it anew)")
