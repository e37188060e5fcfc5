"""A prepared dataset on disk: open it, validate it, hand out memory-mapped token arrays.

    <dir>/meta.json   {"format": "nanollm-dataset", "version": 1, "tokenizer": "gpt2",
                       "vocab_size": 50257, "eot_token": 50256, "dtype": "uint16",
                       "train_tokens": n, "val_tokens": n, "source": ..., "sha256": ...,
                       "train_val_split": 0.1}
    <dir>/train.bin   the first (1 - split) of the tokens, raw little-endian `dtype`, no header
    <dir>/val.bin     the last `split` fraction of the tokens

    ds = open_dataset("data/shakespeare")
    ds.train[i : i + block_size + 1]     # np.memmap slice, (block_size + 1,) uint16

The arrays are read-only memory maps, so a multi-GB dataset costs no RAM until sliced. This file
needs only numpy: the trainer opens datasets without importing the tokenizers. The three files
must be inside the folder: a link among them that leads elsewhere is refused. Opening changes
nothing on disk, and a dataset replaced while it is opened is read again, never mixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nanollm.atomic_dir import read_stable
from nanollm.confined_paths import escape_reason

FORMAT = "nanollm-dataset"
VERSION = 1
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
# Token ids are < vocab_size, so uint16 holds every id while vocab_size <= 65536.
_DTYPES: dict[str, type[np.unsignedinteger[Any]]] = {"uint16": np.uint16, "uint32": np.uint32}
_REQUIRED_KEYS = ("tokenizer", "vocab_size", "dtype", "train_tokens", "val_tokens")
# How often open_dataset reads again when the folder was replaced while it read.


class DataError(ValueError):
    """Input text or a prepared dataset is unusable; the message names the file and the fix."""


def token_dtype(vocab_size: int) -> str:
    """The narrowest dtype name that holds every id in [0, vocab_size)."""
    if vocab_size < 1:
        raise DataError(f"vocab_size must be >= 1, got {vocab_size}")
    if vocab_size <= 2**16:
        return "uint16"
    if vocab_size <= 2**32:
        return "uint32"
    raise DataError(f"vocab_size {vocab_size} does not fit in uint32 token ids")


@dataclass
class PreparedDataset:
    """An opened dataset folder. `train`/`val` are read-only memmaps of shape (n_tokens,)."""

    path: Path
    meta: dict[str, Any]
    train: np.memmap
    val: np.memmap
    tokenizer: str
    vocab_size: int
    eot_token: int | None = field(default=None)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.train.dtype


def is_dataset_dir(path: str | Path) -> bool:
    """True when `path` holds a meta.json of this format and both token files (not validated)."""
    path = Path(path)
    if not all((path / name).is_file() for name in (META_FILE, TRAIN_FILE, VAL_FILE)):
        return False
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def read_meta(path: str | Path) -> dict[str, Any]:
    """Parse and check `<path>/meta.json`; raises DataError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset folder (prepare one with "
                        f"DataPreparer().prepare_data(...))")
    if not path.is_dir():
        raise DataError(f"{path}: is a file, not a dataset folder")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing; {path} is not a prepared dataset")
    _check_inside(meta_path, path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{meta_path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: not a nanoLLM dataset (format != {FORMAT!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise DataError(f"{meta_path}: version {meta.get('version')!r} is not one this nanoLLM "
                        f"reads (<= {VERSION}); upgrade nanollm-gpt or prepare the data again")
    missing = [key for key in _REQUIRED_KEYS if key not in meta]
    if missing:
        raise DataError(f"{meta_path}: missing keys {missing}")
    if meta["dtype"] not in _DTYPES:
        raise DataError(f"{meta_path}: dtype {meta['dtype']!r} is not one of {sorted(_DTYPES)}")
    for key in ("vocab_size", "train_tokens", "val_tokens"):
        if not isinstance(meta[key], int) or meta[key] < 0:
            raise DataError(f"{meta_path}: {key} must be a non-negative integer, "
                            f"got {meta[key]!r}")
    if np.iinfo(_DTYPES[meta["dtype"]]).max < meta["vocab_size"] - 1:
        raise DataError(f"{meta_path}: dtype {meta['dtype']} cannot hold ids of "
                        f"vocab_size {meta['vocab_size']}")
    return meta


def _check_inside(file: Path, folder: Path) -> None:
    escape = escape_reason(file, folder)
    if escape is not None:
        raise DataError(f"{file}: {escape}; a dataset's files must be inside its folder")


def _map_tokens(file: Path, dtype: type[np.unsignedinteger[Any]], expected: int) -> np.memmap:
    """Memory-map a token file read-only after checking its length against meta.json."""
    if not file.is_file():
        raise DataError(f"{file}: missing; prepare the dataset again")
    _check_inside(file, file.parent)
    itemsize = np.dtype(dtype).itemsize
    try:
        size = file.stat().st_size
    except OSError as exc:  # removed since the check above
        raise DataError(f"{file}: cannot be read ({exc.strerror or exc})") from exc
    if size % itemsize or size // itemsize != expected:
        raise DataError(f"{file}: holds {size} bytes ({size / itemsize:g} tokens of "
                        f"{np.dtype(dtype).name}) but {META_FILE} says {expected} tokens; "
                        f"the dataset is damaged, prepare it again")
    if expected == 0:
        raise DataError(f"{file}: has no tokens; prepare the dataset again with more data")
    try:
        return np.memmap(file, dtype=dtype, mode="r", shape=(expected,))
    except (OSError, ValueError) as exc:  # removed or shortened since the size check
        raise DataError(f"{file}: cannot be mapped ({exc}); the dataset is damaged, prepare it "
                        "again") from exc


def open_dataset(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset folder; every file is checked against meta.json first.

    A preparation may replace the folder meanwhile (nanollm.atomic_dir): the instant between
    its two renames is waited out, and a read that saw the folder change is done again, so
    meta.json and the token files always come from the same version."""
    path = Path(path)
    return read_stable(path, lambda: _open_once(path), DataError)


def _open_once(path: Path) -> PreparedDataset:
    meta = read_meta(path)
    dtype = _DTYPES[meta["dtype"]]
    return PreparedDataset(
        path=path,
        meta=meta,
        train=_map_tokens(path / TRAIN_FILE, dtype, meta["train_tokens"]),
        val=_map_tokens(path / VAL_FILE, dtype, meta["val_tokens"]),
        tokenizer=str(meta["tokenizer"]),
        vocab_size=int(meta["vocab_size"]),
        eot_token=meta.get("eot_token"),
    )
