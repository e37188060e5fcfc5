"""Data preparation under failure and attack: truncated downloads, private URLs, SIGTERM and
killed runs, links out of the folder, and progress output that suits where it goes."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from local_http import LocalServer, send_body

from nanollm import DataPreparer, byte_progress
from nanollm.byte_progress import ByteProgress
from nanollm.dataset import DataError, open_dataset

ROOT = Path(__file__).resolve().parents[1]
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))
# What a program that handles Ctrl-C does (as the command-line tools do): one line, exit 130.
PREPARE_SCRIPT = """
import sys
from nanollm import DataPreparer
try:
    DataPreparer("byte", allow_private_urls=True).prepare_data(
        sys.argv[1], output_dir=sys.argv[2], block_size=8, show_progress=False)
except KeyboardInterrupt as exc:
    print(f"stopped: {exc}", file=sys.stderr)
    sys.exit(130)
"""


def prepare(data: str | Path, out: Path, **kwargs: object) -> Path:
    return DataPreparer("byte", **kwargs).prepare_data(  # type: ignore[arg-type]
        data, output_dir=out, block_size=8, show_progress=False)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hanging() -> Iterator[Callable[..., LocalServer]]:
    """A server whose /slow.txt sends 100 of 10,000 announced bytes, then waits (at most 60 s)
    until the test ends."""
    release = threading.Event()

    def slow(handler: object) -> None:
        send_body(b"x" * 100, length=10_000)(handler)  # type: ignore[arg-type]
        handler.wfile.flush()  # type: ignore[attr-defined]
        release.wait(60)

    server = LocalServer({"/slow.txt": slow})
    with server:
        yield lambda: server
        release.set()


def _wait_for_download(parent: Path, name: str) -> Path:
    """The hidden temp folder of a preparation of parent/name once its download has begun (the
    file is opened when the answer's headers have come)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for tmp in parent.glob(f".{name}.tmp-*"):
            if (tmp / "download.txt").is_file():
                return tmp
        time.sleep(0.01)
    raise AssertionError("the preparation never started its download")


def _start_preparation(url: str, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", PREPARE_SCRIPT, url, str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------------------------
# downloads


def test_truncated_download_fails_and_caches_nothing(tmp_path: Path) -> None:
    body = TEXT.encode()[:1200]
    routes = {"/cut.txt": send_body(body, length=1_000_000)}
    with LocalServer(routes) as server, pytest.raises(DataError) as info:
        prepare(server.url("/cut.txt"), tmp_path / "ds", allow_private_urls=True)
    assert str(info.value) == (
        f"{server.url('/cut.txt')}: download incomplete: got 1200 of the 1000000 bytes the "
        "server announced (the connection closed early); try again")
    assert list(tmp_path.iterdir()) == []


def test_private_urls_are_refused_unless_allowed(tmp_path: Path) -> None:
    with LocalServer({"/book.txt": send_body(TEXT.encode())}) as server:
        url = server.url("/book.txt")
        with pytest.raises(DataError) as info:
            prepare(url, tmp_path / "ds")
        assert server.requests == []
        out = prepare(url, tmp_path / "ds", allow_private_urls=True)
    assert str(info.value) == (
        f"{url}: refused: 127.0.0.1 is a loopback address; downloads from loopback, private, "
        "link-local and cloud metadata addresses are blocked (allow_private_urls=True allows "
        "them for local use)")
    assert bytes(open_dataset(out).train.tolist()) == TEXT.encode()[:len(open_dataset(out).train)]


# ----------------------------------------------------------------------------------------------
# SIGTERM and killed runs


def test_sigterm_during_preparation_cleans_up_and_says_so(tmp_path: Path, hanging) -> None:
    server = hanging()
    proc = _start_preparation(server.url("/slow.txt"), tmp_path / "ds")
    try:
        _wait_for_download(tmp_path, "ds")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (130, "stopped: data preparation stopped by SIGTERM\n")
    assert list(tmp_path.iterdir()) == []


def test_next_preparation_removes_what_a_killed_one_left(tmp_path: Path, hanging) -> None:
    server = hanging()
    proc = _start_preparation(server.url("/slow.txt"), tmp_path / "ds")
    try:
        left = _wait_for_download(tmp_path, "ds")
    finally:
        proc.kill()
        proc.wait(60)
    assert left.is_dir()  # kill -9 runs no cleanup
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    prepare(src, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.txt", "ds"]


def test_gpt_train_sigterm_while_preparing_leaves_nothing(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(TEXT * 12_000, encoding="utf-8")  # 27 MB: seconds of GPT-2 tokenizing
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trainer.cli", "--data-path", str(big), "--data-dir",
           str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"), "--n-layer", "1",
           "--n-head", "1", "--n-embd", "8", "--block-size", "8", "--max-iters", "1",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "data").glob(".big-gpt2.tmp-*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode not in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("gpt-train: error: "), err
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_reader_polling_while_a_preparation_replaces_the_dataset(tmp_path: Path) -> None:
    short, long = tmp_path / "short.txt", tmp_path / "long.txt"
    short.write_text(TEXT)
    long.write_text(TEXT * 3)
    out = prepare(short, tmp_path / "ds")
    done, failures = threading.Event(), []

    def writer() -> None:
        try:
            for i in range(150):  # each replace swaps in a dataset of another size
                prepare(long if i % 2 == 0 else short, out)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        try:
            ds = open_dataset(out)
            reads += 1
        except Exception as exc:  # what a polling server would see
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        assert len(ds.train) + len(ds.val) in (len(TEXT), 3 * len(TEXT))
    thread.join()
    assert failures == [] and reads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "long.txt", "short.txt"]


# ----------------------------------------------------------------------------------------------
# links out of the folder


def test_folder_link_to_outside_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password: hunter2\n" * 10)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TEXT)
    (corpus / "link.txt").symlink_to(secret)
    with pytest.raises(DataError) as info:
        prepare(corpus, tmp_path / "ds")
    assert str(info.value) == (
        f"{corpus / 'link.txt'}: leads to {secret}, outside {corpus}; a folder's documents must "
        "be inside it (copy the file in, or remove the link)")
    assert not (tmp_path / "ds").exists()
    # a link that stays inside the folder is followed
    (corpus / "link.txt").unlink()
    (corpus / "sub").mkdir()
    (corpus / "sub" / "b.txt").symlink_to(corpus / "a.txt")
    out = prepare(corpus, tmp_path / "ds")
    assert open_dataset(out).meta["documents"] == 2


def test_dataset_file_linked_outside_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    out = prepare(src, tmp_path / "ds")
    meta = json.loads((out / "meta.json").read_text())
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"\0\0" * meta["val_tokens"])
    (out / "val.bin").unlink()
    (out / "val.bin").symlink_to(outside)
    with pytest.raises(DataError) as info:
        open_dataset(out)
    assert str(info.value) == (f"{out / 'val.bin'}: leads to {outside}, outside {out}; a "
                               "dataset's files must be inside its folder")
    # the folder itself may be a link
    (tmp_path / "ds_link").symlink_to(out)
    (out / "val.bin").unlink()
    (out / "val.bin").write_bytes(outside.read_bytes())
    assert open_dataset(tmp_path / "ds_link").meta["val_tokens"] == meta["val_tokens"]


# ----------------------------------------------------------------------------------------------
# progress output


def test_progress_off_a_terminal_is_log_lines_not_bar_frames(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "book.txt"
    src.write_text(TEXT)
    with caplog.at_level(logging.INFO, logger="nanollm.byte_progress"):
        DataPreparer("byte").prepare_data(src, tmp_path / "quick", block_size=8)
    assert capfd.readouterr().err == ""  # short work off a terminal: nothing at all
    assert caplog.records == []
    monkeypatch.setattr(byte_progress, "LOG_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="nanollm.byte_progress"):
        DataPreparer("byte", chunk_bytes=1024).prepare_data(src, tmp_path / "slow", block_size=8)
    assert capfd.readouterr().err == ""
    lines = [r.getMessage() for r in caplog.records]
    size = f"{len(TEXT) / 1000:.1f} kB"
    assert len(lines) >= 2 and lines[-1].startswith(f"tokenize: {size} of {size} (100%), ")


def test_progress_on_a_terminal_is_a_bar() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with ByteProgress("tokenize", 2000, stream=screen) as progress:
        progress.update(1000)
        progress.update(1000)
    assert "\r" in screen.getvalue() and "tokenize: 100%" in screen.getvalue()
    silent = Terminal()
    with ByteProgress("tokenize", 2000, stream=silent, enabled=False) as progress:
        progress.update(2000)
    assert silent.getvalue() == ""
