"""Turn text into a prepared dataset: tokenize a file, folder or URL into train.bin / val.bin.

    from nanollm import DataPreparer
    path = DataPreparer("gpt2").prepare_data("nanollm/assets/corpus/shakespeare.txt",
                                             block_size=256)   # -> data/shakespeare
    # later: nanollm.dataset.open_dataset(path).train -> np.memmap of uint16 token ids

Input is streamed: read in ~1 MB pieces cut at safe places, tokenized, appended to a temp file.
Documents of a folder are joined with the tokenizer's end-of-text token. The last
`train_val_split` of the tokens becomes val.bin. Everything is written into a hidden temp folder
that is renamed into place at the end (nanollm.atomic_dir), so an interrupted run never leaves a
half dataset: an error, Ctrl-C or SIGTERM removes the temp folder, and the next preparation of
the same folder removes what a killed one left. A dataset already prepared from the same input
(sha256) with the same settings is reused. URLs are downloaded through nanollm.url_guard, which
refuses loopback, private and cloud metadata addresses unless allow_private_urls is set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nanollm.atomic_dir import make_temp_dir, replace_dir_atomically
from nanollm.byte_progress import ByteProgress
from nanollm.dataset import (
    FORMAT,
    META_FILE,
    TRAIN_FILE,
    VAL_FILE,
    VERSION,
    DataError,
    is_dataset_dir,
    open_dataset,
    token_dtype,
)
from nanollm.interrupt import Terminated, sigterm_raises
from nanollm.text_sources import (
    TEXT_SUFFIXES,
    DecodeStats,
    fetch_url,
    is_url,
    iter_text_chunks,
    list_documents,
    sha256_of,
    source_stem,
)
from nanollm.tokenizer import Tokenizer, load_tokenizer

__all__ = ["DataPreparer", "Terminated"]

logger = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = Path("data")
_TOKENS_FILE = "tokens.bin"
_DOWNLOAD_FILE = "download.txt"
MAX_SPLIT = 0.5  # the largest train_val_split (TrainingConfig.train_val_split)


class DataPreparer:
    """Prepares datasets with one tokenizer ("gpt2", "byte", "char" or a Tokenizer object).

    chunk_bytes: how much text is read and tokenized at a time (memory stays ~ a few chunks).
    url_timeout: seconds to wait for a connection or for each read of a URL.
    max_download_bytes: a URL whose body is larger fails instead of filling the disk.
    allow_private_urls: also download from loopback, private, link-local and cloud metadata
        addresses (off: a URL, or a redirect, that leads there fails). Turn it on only for
        local use, never where the URL comes from someone else (a server's users).
    suffixes: which files of a folder are text (others, and hidden files, are skipped).
    data_root: where datasets go when prepare_data is given no output_dir.
    """

    def __init__(self, tokenizer: str | Tokenizer = "gpt2", *, chunk_bytes: int = 1 << 20,
                 url_timeout: float = 30.0, max_download_bytes: int = 1 << 30,
                 allow_private_urls: bool = False, suffixes: tuple[str, ...] = TEXT_SUFFIXES,
                 data_root: str | os.PathLike[str] = DEFAULT_DATA_ROOT) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        if url_timeout <= 0:
            raise ValueError(f"url_timeout must be > 0 seconds, got {url_timeout}")
        if max_download_bytes < 1:
            raise ValueError(f"max_download_bytes must be >= 1, got {max_download_bytes}")
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.chunk_bytes = chunk_bytes
        self.url_timeout = url_timeout
        self.max_download_bytes = max_download_bytes
        self.allow_private_urls = allow_private_urls
        self.suffixes = tuple(suffixes)
        self.data_root = Path(data_root)
        self.dtype = np.dtype(token_dtype(self.tokenizer.vocab_size))

    def prepare_data(self, data_path: str | os.PathLike[str], output_dir: str | os.PathLike[str]
                     | None = None, train_val_split: float = 0.1, block_size: int = 1024,
                     show_progress: bool = True) -> Path:
        """Tokenize `data_path` (file, folder or http(s) URL) into a dataset folder; returns it.

        Default output_dir: <data_root>/<input stem>. A data_path that already is a prepared
        dataset folder is checked and returned as is. Fails with DataError when the input is
        empty, unreachable, or too short to give train and val block_size + 1 tokens each.
        SIGTERM (in the main thread) raises Terminated, a KeyboardInterrupt, like Ctrl-C; either
        way nothing is left behind. show_progress: a bar on a terminal, else a log line every
        30 s (nanollm.byte_progress)."""
        data_path = os.fspath(data_path)
        if not 0.0 < train_val_split < 1.0:
            raise ValueError(f"train_val_split must be in (0, 1), got {train_val_split}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if "://" in data_path and not is_url(data_path):
            raise DataError(f"{data_path}: only http:// and https:// URLs are supported")
        if not is_url(data_path) and is_dataset_dir(data_path):
            return self._check_prepared(Path(data_path), block_size)
        final = Path(output_dir) if output_dir is not None else (
            self.data_root / source_stem(data_path))
        _check_output_dir(final)
        with sigterm_raises("data preparation"):
            tmp = make_temp_dir(final)  # also removes what killed preparations of final left
            try:
                if not self._prepare_into(tmp, final, data_path, train_val_split, block_size,
                                          show_progress):
                    return self._check_prepared(final, block_size)
                replace_dir_atomically(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _prepare_into(self, tmp: Path, final: Path, data_path: str, train_val_split: float,
                      block_size: int, show_progress: bool) -> bool:
        """Write the dataset of data_path into tmp; False when final already holds it."""
        if is_url(data_path):
            root = tmp / _DOWNLOAD_FILE
            fetch_url(data_path, root, timeout=self.url_timeout,
                      max_bytes=self.max_download_bytes, show_progress=show_progress,
                      allow_private=self.allow_private_urls)
        else:
            root = Path(data_path)
        docs = list_documents(root, self.suffixes)
        digest = sha256_of(docs, root)
        settings = {"tokenizer": self.tokenizer.name, "sha256": digest,
                    "train_val_split": train_val_split}
        if _reusable(final, settings):
            logger.info("%s: already prepared from this input (sha256 %s…) with the same "
                        "settings; reusing it", final, digest[:12])
            return False
        n_tokens = self._tokenize(docs, tmp / _TOKENS_FILE, data_path, show_progress)
        n_val = int(n_tokens * train_val_split)
        _check_sizes(n_tokens - n_val, n_val, train_val_split, block_size, data_path)
        _split_tokens(tmp / _TOKENS_FILE, tmp, n_tokens - n_val, self.dtype.itemsize)
        (tmp / _DOWNLOAD_FILE).unlink(missing_ok=True)
        meta = self._meta(data_path, settings, n_tokens - n_val, n_val, len(docs))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        logger.info("%s: %d train + %d val tokens (%s, %s)", final, n_tokens - n_val, n_val,
                    self.tokenizer.name, self.dtype.name)
        return True

    def _check_prepared(self, path: Path, block_size: int) -> Path:
        """A prepared dataset is usable here if it is intact, of our tokenizer, long enough."""
        meta = open_dataset(path).meta
        if meta["tokenizer"] != self.tokenizer.name:
            raise DataError(f"{path}: prepared with tokenizer {meta['tokenizer']!r}, not "
                            f"{self.tokenizer.name!r}; prepare the text again with this one")
        _check_sizes(meta["train_tokens"], meta["val_tokens"], meta.get("train_val_split", "?"),
                     block_size, str(path))
        return path

    def _tokenize(self, docs: list[Path], out_path: Path, source: str,
                  show_progress: bool) -> int:
        """Stream every document through the tokenizer into out_path; returns the token count.

        An end-of-text token goes between documents that produced tokens (not after the last)."""
        stats = DecodeStats()
        n_tokens = 0
        has_text = False
        eot = self.tokenizer.eot_token
        total_bytes = sum(doc.stat().st_size for doc in docs)
        with open(out_path, "wb") as out, ByteProgress("tokenize", total_bytes,
                                                       enabled=show_progress) as progress:
            for doc in docs:
                doc_tokens = 0
                for text, n_bytes in iter_text_chunks(doc, chunk_bytes=self.chunk_bytes,
                                                      stats=stats):
                    has_text = has_text or (bool(text) and not text.isspace())
                    ids = self.tokenizer.encode(text)
                    if ids and not doc_tokens and n_tokens and eot is not None:
                        ids = [eot, *ids]  # separate this document from the previous one
                    doc_tokens += len(ids)
                    n_tokens += self._write(out, ids)
                    progress.update(n_bytes)
        if stats.replaced:
            logger.warning("%s: %d invalid UTF-8 byte sequence(s) replaced with U+FFFD; is the "
                           "input really UTF-8 text?", source, stats.replaced)
        if stats.fallback_cuts:
            logger.info("%s: %d chunk cut(s) fell inside long runs without spaces or newlines; "
                        "tokens at those cuts may differ slightly", source, stats.fallback_cuts)
        if total_bytes == 0 or n_tokens == 0:
            raise DataError(f"{source}: input is empty (0 bytes of text); nothing to train on")
        if not has_text:
            raise DataError(f"{source}: input holds only whitespace ({total_bytes} bytes); "
                            f"nothing to train on")
        return n_tokens

    def _write(self, out: BinaryIO, ids: list[int]) -> int:
        """Append ids as self.dtype; ids outside the vocabulary would wrap, so they fail."""
        if not ids:
            return 0
        arr = np.asarray(ids, dtype=np.int64)  # (n,)
        if int(arr.min()) < 0 or int(arr.max()) >= self.tokenizer.vocab_size:
            raise DataError(f"tokenizer {self.tokenizer.name!r} produced ids outside "
                            f"[0, {self.tokenizer.vocab_size})")
        out.write(arr.astype(self.dtype).tobytes())
        return int(arr.size)

    def _meta(self, source: str, settings: dict[str, Any], n_train: int, n_val: int,
              n_docs: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "eot_token": self.tokenizer.eot_token,
            "dtype": self.dtype.name,
            "train_tokens": n_train,
            "val_tokens": n_val,
            "source": source,
            "sha256": settings["sha256"],
            "train_val_split": settings["train_val_split"],
            "documents": n_docs,
        }


def _check_output_dir(final: Path) -> None:
    """Only a previous dataset or an empty folder may be replaced; never a user's other files."""
    if not final.exists():
        return
    if not final.is_dir():
        raise DataError(f"{final}: output_dir exists and is a file; choose another output_dir")
    if any(final.iterdir()) and not (final / META_FILE).is_file():
        raise DataError(f"{final}: output_dir exists, is not empty and is not a nanoLLM dataset; "
                        f"choose another output_dir or remove it")


def _reusable(final: Path, settings: dict[str, Any]) -> bool:
    """True when final is an intact dataset made from the same input with the same settings."""
    try:
        meta = open_dataset(final).meta
    except DataError:
        return False
    return meta.get("version") == VERSION and all(meta.get(k) == v for k, v in settings.items())


def _check_sizes(n_train: int, n_val: int, split: object, block_size: int, source: str) -> None:
    """Training samples block_size + 1 tokens (inputs and shifted targets) from each split."""
    need = block_size + 1
    if n_train >= need and n_val >= need:
        return
    total = n_train + n_val
    short = "val" if n_val < need else "train"
    fixes = []
    if min(n_train, n_val) >= 2:
        fixes.append(f"a smaller block_size (at most {min(n_train, n_val) - 1})")
    if total >= 2 * need:  # the split is at most MAX_SPLIT (TrainingConfig's range)
        fixes.append(f"train_val_split between {need / total:.3g} and "
                     f"{min(MAX_SPLIT, 1 - need / total):.3g}")
    fixes.append(f"more data (at least {2 * need} tokens for block_size={block_size})")
    raise DataError(
        f"{source}: {total} tokens give {n_train} train and {n_val} val tokens "
        f"(train_val_split={split}), but block_size={block_size} needs at least {need} in each; "
        f"the {short} split is too short. Use " + ", or ".join(fixes) + ".")


def _split_tokens(tokens: Path, folder: Path, n_train: int, itemsize: int) -> None:
    """tokens -> train.bin (first n_train) + val.bin (the rest), copying only the val tail."""
    with open(tokens, "rb") as src, open(folder / VAL_FILE, "wb") as val:
        src.seek(n_train * itemsize)
        shutil.copyfileobj(src, val, 1 << 20)
    os.truncate(tokens, n_train * itemsize)
    os.replace(tokens, folder / TRAIN_FILE)

