"""Data preparation: files, folders and URLs into train.bin / val.bin, and reading them back."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from local_http import LocalServer, send_body

from nanollm import DataPreparer
from nanollm.dataset import DataError, is_dataset_dir, open_dataset, token_dtype
from nanollm.text_sources import DecodeStats, iter_text_chunks
from nanollm.tokenizer import ByteTokenizer, load_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "nanollm" / "assets" / "corpus" / "shakespeare.txt"
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))


def all_tokens(path: Path) -> list[int]:
    ds = open_dataset(path)
    return np.concatenate([ds.train, ds.val]).tolist()


def prepare(tmp_path: Path, data: str | Path, **kwargs: object) -> Path:
    """Byte tokenizer, block 8, no progress bar: the small settings most tests want."""
    kwargs.setdefault("block_size", 8)
    preparer_kwargs = {k: kwargs.pop(k) for k in ("chunk_bytes", "max_download_bytes",
                                                  "url_timeout", "allow_private_urls")
                       if k in kwargs}
    preparer = DataPreparer(str(kwargs.pop("tokenizer", "byte")), **preparer_kwargs)
    out = kwargs.pop("output_dir", tmp_path / "ds")
    return preparer.prepare_data(str(data), output_dir=out, show_progress=False, **kwargs)


def test_text_file(tmp_path: Path) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = prepare(tmp_path, src, train_val_split=0.25)
    assert out == tmp_path / "ds" and is_dataset_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    ds = open_dataset(out)
    n = len(TEXT.encode())
    assert ds.meta["train_tokens"] + ds.meta["val_tokens"] == n
    assert ds.meta["val_tokens"] == int(n * 0.25)
    assert ds.meta["dtype"] == "uint16" and ds.train.dtype == np.uint16
    assert ds.tokenizer == "byte" and ds.vocab_size == 257 and ds.eot_token == 256
    assert ds.meta["source"] == str(src) and ds.meta["train_val_split"] == 0.25
    assert not ds.train.flags.writeable
    assert bytes(all_tokens(out)).decode() == TEXT
    # the val split is the end of the text
    assert bytes(ds.val.tolist()).decode() == TEXT[-ds.meta["val_tokens"]:]


def test_folder_of_documents(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("alpha one two three\n")
    (root / "b" / "c.md").write_text("# gamma\nfour five six\n")
    (root / "b" / "empty.txt").write_text("")
    (root / "b" / "skip.py").write_text("print('not text')\n")
    (root / ".hidden.txt").write_text("hidden\n")
    (root / "a2.txt").write_text("beta seven eight nine ten\n")
    out = prepare(tmp_path, root, train_val_split=0.2)
    ds = open_dataset(out)
    assert ds.meta["documents"] == 4
    ids = all_tokens(out)
    assert ids.count(256) == 2  # between the 3 documents with text, none after the last
    parts = ByteTokenizer().decode_bytes(ids).decode()
    assert parts == ("alpha one two three\n" "beta seven eight nine ten\n"
                     "# gamma\nfour five six\n")
    assert [i for i, t in enumerate(ids) if t == 256] == [20, 20 + 1 + 26]


def test_bundled_corpus_gpt2_block_256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = DataPreparer("gpt2").prepare_data(CORPUS, block_size=256, show_progress=False)
    assert out == Path("data/shakespeare")
    meta = json.loads((out / "meta.json").read_text())
    text = CORPUS.read_text(encoding="utf-8")
    tok = load_tokenizer("gpt2")
    whole = tok.encode(text)
    assert meta["format"] == "nanollm-dataset" and meta["version"] == 1
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    assert meta["eot_token"] == 50256 and meta["dtype"] == "uint16"
    assert meta["train_tokens"] + meta["val_tokens"] == len(whole)
    assert meta["val_tokens"] == int(len(whole) * 0.1)
    assert (out / "train.bin").stat().st_size == 2 * meta["train_tokens"]
    # chunked tokenization (1 MB pieces) gives exactly the tokens of the whole text at once
    assert all_tokens(out) == whole
    assert tok.decode(all_tokens(out)) == text


@pytest.mark.parametrize("chunk_bytes", [7, 64])
def test_small_chunks_tokenize_like_the_whole_text(tmp_path: Path, chunk_bytes: int) -> None:
    # whitespace runs, CRLF, blank lines, contractions, non-ASCII: cuts must not change tokens
    text = ("It's  a test.\n\nDon't stop \r\nnow:\t tabs\n   indented  lines\n"
            "数字 12345 and ü é 🙂 word\n\n\n  x y\nz's end. \n") * 30
    src = tmp_path / "t.txt"
    src.write_text(text, encoding="utf-8", newline="")
    out = prepare(tmp_path, src, tokenizer="gpt2", chunk_bytes=chunk_bytes)
    assert all_tokens(out) == load_tokenizer("gpt2").encode(text)


def test_long_run_without_cut_points_falls_back(tmp_path: Path) -> None:
    src = tmp_path / "one_word.txt"
    src.write_bytes(("é" * 3000).encode())
    stats = DecodeStats()
    pieces = list(iter_text_chunks(src, chunk_bytes=100, stats=stats, max_carry=1000))
    assert "".join(t for t, _ in pieces) == "é" * 3000  # never cut inside a character
    assert sum(n for _, n in pieces) == 6000 and stats.fallback_cuts > 0 and not stats.replaced


def test_dtype_selection(tmp_path: Path) -> None:
    assert token_dtype(257) == "uint16"
    assert token_dtype(50257) == "uint16"
    assert token_dtype(65536) == "uint16"  # ids 0..65535
    assert token_dtype(65537) == "uint32"

    class WideTokenizer(ByteTokenizer):
        """Byte ids shifted past 65535 so only uint32 can hold them."""

        name = "wide"

        def __init__(self) -> None:
            self.eot_token = 70_000
            self.vocab_size = 70_001

        def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
            return [69_000 + b for b in text.encode()]

    src = tmp_path / "t.txt"
    src.write_text(TEXT)
    out = DataPreparer(WideTokenizer()).prepare_data(src, tmp_path / "wide", block_size=8,
                                                     show_progress=False)
    ds = open_dataset(out)
    assert ds.meta["dtype"] == "uint32" and ds.train.dtype == np.uint32
    assert (out / "train.bin").stat().st_size == 4 * ds.meta["train_tokens"]
    assert bytes(t - 69_000 for t in all_tokens(out)).decode() == TEXT


@pytest.mark.parametrize(("content", "message"), [
    (b"", "input is empty"),
    (b" \n\t\r\n   \n", "only whitespace"),
])
def test_empty_or_whitespace_input(tmp_path: Path, content: bytes, message: str) -> None:
    src = tmp_path / "blank.txt"
    src.write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, src)
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["blank.txt"]  # no temp folder left


def test_too_little_data_for_a_val_block(tmp_path: Path) -> None:
    src = tmp_path / "tiny.txt"
    src.write_text("just forty bytes of text, not much more\n")
    with pytest.raises(DataError) as info:
        prepare(tmp_path, src, block_size=8, train_val_split=0.1)
    msg = str(info.value)
    assert "40 tokens" in msg and "4 val tokens" in msg and "block_size=8" in msg
    assert "smaller block_size (at most 3)" in msg
    assert "train_val_split between 0.225 and 0.5" in msg  # 0.775 would be out of its range
    assert "more data" in msg
    assert not (tmp_path / "ds").exists()
    # following the advice works
    out = prepare(tmp_path, src, block_size=8, train_val_split=0.3)
    assert open_dataset(out).meta["val_tokens"] == 12


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "latin1.txt"
    # two invalid bytes (latin-1 é and a stray \xff) and one genuine U+FFFD, which is not counted
    src.write_bytes(b"caf\xe9 au lait \xff and \xef\xbf\xbd ok\n" * 3)
    with caplog.at_level(logging.WARNING, logger="nanollm.data"):
        out = prepare(tmp_path, src, tokenizer="gpt2", block_size=4, train_val_split=0.3)
    assert "6 invalid UTF-8" in caplog.text
    text = load_tokenizer("gpt2").decode(all_tokens(out))
    assert text == "caf\ufffd au lait \ufffd and \ufffd ok\n" * 3


def test_reuse_and_replace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    out = prepare(tmp_path, src)
    mtime = (out / "train.bin").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="nanollm.data"):
        prepare(tmp_path, src)
    assert "reusing" in caplog.text
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    # a reused dataset is still checked against the block size asked for
    with pytest.raises(DataError, match="block_size=1024"):
        prepare(tmp_path, src, block_size=1024)
    # another split, or changed input, prepares it again in place
    prepare(tmp_path, src, train_val_split=0.5)
    assert open_dataset(out).meta["train_val_split"] == 0.5
    src.write_text(TEXT + TEXT)
    prepare(tmp_path, src, train_val_split=0.5)
    assert open_dataset(out).meta["train_tokens"] == len(TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.txt", "ds"]


def test_prepared_dataset_as_input_and_data_root(tmp_path: Path) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    out = DataPreparer("byte", data_root=tmp_path / "prepared").prepare_data(
        src, block_size=8, show_progress=False)
    assert out == tmp_path / "prepared" / "book"
    # a dataset folder given as data_path is checked and handed back untouched
    assert DataPreparer("byte").prepare_data(out, block_size=8, show_progress=False) == out
    with pytest.raises(DataError, match="prepared with tokenizer 'byte', not 'gpt2'"):
        DataPreparer("gpt2").prepare_data(out, block_size=8, show_progress=False)


def test_output_dir_with_other_files_is_not_replaced(tmp_path: Path) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a nanoLLM dataset"):
        prepare(tmp_path, src, output_dir=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        prepare(tmp_path, tmp_path / "missing.txt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="holds no text files"):
        prepare(tmp_path, tmp_path / "empty_dir")
    with pytest.raises(ValueError, match="train_val_split"):
        prepare(tmp_path, CORPUS, train_val_split=1.0)
    with pytest.raises(ValueError, match="block_size"):
        prepare(tmp_path, CORPUS, block_size=0)
    with pytest.raises(DataError, match="only http"):
        prepare(tmp_path, "ftp://example.com/a.txt")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        DataPreparer("nope")


def test_refused_url_fails_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot reach"):
        prepare(tmp_path, "http://127.0.0.1:9/x.txt", url_timeout=5, allow_private_urls=True)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def server() -> Iterator[str]:
    """/book.txt with a Content-Length, /stream.txt without one, anything else 404."""
    routes = {"/book.txt": send_body(TEXT.encode()),
              "/stream.txt": send_body(TEXT.encode(), length=None)}
    with LocalServer(routes) as srv:
        yield srv.url("")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("name", ["book.txt", "stream.txt"])
def test_url_from_local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: str,
                               name: str) -> None:
    monkeypatch.chdir(tmp_path)
    out = DataPreparer("byte", allow_private_urls=True).prepare_data(
        f"{server}/{name}", block_size=8, show_progress=False)
    assert out == Path("data") / Path(name).stem
    ds = open_dataset(out)
    assert ds.meta["source"] == f"{server}/{name}"
    assert bytes(all_tokens(out)).decode() == TEXT
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert sorted(p.name for p in Path("data").iterdir()) == [Path(name).stem]


@pytest.mark.parametrize("name", ["book.txt", "stream.txt"])
def test_url_size_limit(tmp_path: Path, server: str, name: str) -> None:
    with pytest.raises(DataError, match="over the download limit of 1000 bytes"):
        prepare(tmp_path, f"{server}/{name}", max_download_bytes=1000, allow_private_urls=True)
    assert list(tmp_path.iterdir()) == []


def test_url_http_error(tmp_path: Path, server: str) -> None:
    with pytest.raises(DataError, match="HTTP 404"):
        prepare(tmp_path, f"{server}/missing.txt", allow_private_urls=True)


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset folder"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"meta\.json: missing"):
        open_dataset(tmp_path / "plain")
    assert not is_dataset_dir(tmp_path / "plain")

    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    out = prepare(tmp_path, src)
    assert is_dataset_dir(out)
    meta = json.loads((out / "meta.json").read_text())

    (out / "val.bin").rename(tmp_path / "val.bak")
    with pytest.raises(DataError, match=r"val\.bin: missing"):
        open_dataset(out)
    assert not is_dataset_dir(out)
    (tmp_path / "val.bak").rename(out / "val.bin")

    with open(out / "train.bin", "ab") as f:
        f.write(b"\0")  # half a uint16
    with pytest.raises(DataError, match=r"train.bin: holds .* but meta.json says"):
        open_dataset(out)
    with open(out / "train.bin", "r+b") as f:
        f.truncate(2 * (meta["train_tokens"] - 1))
    with pytest.raises(DataError, match="damaged"):
        open_dataset(out)

    (out / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        open_dataset(out)
    (out / "meta.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(DataError, match="not a nanoLLM dataset"):
        open_dataset(out)
    (out / "meta.json").write_text(json.dumps({**meta, "dtype": "float32"}))
    with pytest.raises(DataError, match="dtype 'float32'"):
        open_dataset(out)
    bad = {k: v for k, v in meta.items() if k != "val_tokens"}
    (out / "meta.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="missing keys"):
        open_dataset(out)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.txt"
    path.write_bytes(b"PK\x03\x04\x00\x00binary" * 100)
    with pytest.raises(DataError, match="looks like a binary file"):
        DataPreparer("byte").prepare_data(path, output_dir=tmp_path / "out", block_size=8,
                                          show_progress=False)
    assert not (tmp_path / "out").exists()
