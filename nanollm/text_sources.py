"""Where training text comes from: a file, a folder of files, or an http(s) URL.

    docs = list_documents(Path("corpus/"))           # sorted *.txt/*.md/... files, recursively
    fetch_url("https://host/book.txt", dest, timeout=30, max_bytes=1 << 30)
    for text, n_bytes in iter_text_chunks(docs[0], chunk_bytes=1 << 20, stats=stats): ...

Big inputs are never read whole: `iter_text_chunks` reads about `chunk_bytes` at a time and cuts
only where GPT-2's pre-tokenizer would also cut, so tokenizing chunk by chunk gives exactly the
tokens that tokenizing the whole text at once would.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nanollm.byte_progress import ByteProgress
from nanollm.confined_paths import escape_reason
from nanollm.dataset import DataError
from nanollm.url_guard import URLBlockedError, url_opener

logger = logging.getLogger(__name__)

# Files a folder contributes; anything else (code, binaries, hidden files) is skipped.
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".markdown", ".rst", ".text")
_READ_BYTES = 1 << 20
_REPLACEMENT = "\ufffd"
_REPLACEMENT_UTF8 = _REPLACEMENT.encode("utf-8")
# Cut points, ASCII only (so never inside a UTF-8 character). A lone newline or a single space
# between two visible ASCII characters is a boundary of GPT-2's pre-tokenizer regex whichever
# side of it the text is cut: the newline is a piece of its own and the space starts the next
# word's piece. Runs of whitespace are not safe ("a\n\n" | "b" tokenizes differently).
_NEWLINE_CUT = re.compile(rb"[\x21-\x7e]\n(?=[\x21-\x7e])")  # cut after the newline
_SPACE_CUT = re.compile(rb"[\x21-\x7e](?= [\x21-\x7e])")      # cut before the space
_CUT_WINDOWS = (1 << 12, 1 << 16, None)  # search the tail first: cheap for normal text


@dataclass
class DecodeStats:
    """Counts what decoding changed, for the warning after preparation."""

    replaced: int = 0  # invalid UTF-8 sequences turned into U+FFFD
    fallback_cuts: int = 0  # chunk cuts with no safe boundary nearby (tokens may differ there)


def is_url(data_path: str) -> bool:
    return data_path.startswith(("http://", "https://"))


def source_stem(data_path: str) -> str:
    """A folder name for the dataset: the file's stem, the folder's name, the URL's last segment."""
    if is_url(data_path):
        parsed = urllib.parse.urlparse(data_path)
        segment = urllib.parse.unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1])
        name = Path(segment).stem or parsed.hostname or "download"
    else:
        path = Path(data_path).resolve()
        name = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def list_documents(path: Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Path]:
    """One file, or a folder's text files (recursively, by relative path, hidden ones skipped).
    A link in the folder that leads outside it is refused (DataError), not followed."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    wanted = {s.lower() for s in suffixes}
    docs = sorted(
        (p for p in path.rglob("*")
         if p.is_file() and p.suffix.lower() in wanted
         and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not docs:
        raise DataError(f"{path}: folder holds no text files (looked for {', '.join(suffixes)} "
                        f"recursively; hidden files are skipped)")
    for doc in docs:
        escape = escape_reason(doc, path)
        if escape is not None:
            raise DataError(f"{doc}: {escape}; a folder's documents must be inside it (copy "
                            f"the file in, or remove the link)")
    return docs


def sha256_of(docs: list[Path], root: Path) -> str:
    """sha256 of one file's bytes (as `sha256sum` prints it); for a folder, of each file's
    relative path, size and bytes in order, so renaming or adding a file changes it too."""
    h = hashlib.sha256()
    single = len(docs) == 1 and docs[0] == root
    for doc in docs:
        if not single:
            rel = doc.relative_to(root).as_posix()
            h.update(f"{rel}\0{doc.stat().st_size}\0".encode())
        with open(doc, "rb") as f:
            while block := f.read(_READ_BYTES):
                h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: Path, *, timeout: float, max_bytes: int,
              show_progress: bool = True, allow_private: bool = False) -> None:
    """Download `url` into `dest`. Fails with DataError on an HTTP error, an unreachable host,
    no answer within `timeout` seconds (per connect or read), a body over `max_bytes`, a body
    shorter than its Content-Length (the connection closed early), or, unless allow_private,
    a host (first or after a redirect) that is loopback, private, link-local or a cloud
    metadata address (see nanollm.url_guard)."""
    request = urllib.request.Request(url, headers={"User-Agent": "nanollm"})
    opener = url_opener(allow_private=allow_private)
    try:
        with opener.open(request, timeout=timeout) as resp, open(dest, "wb") as out:
            total = _content_length(resp.headers.get("Content-Length"))
            if total is not None and total > max_bytes:
                raise DataError(_too_big(url, f"{total} bytes", max_bytes))
            got = 0
            with ByteProgress("download", total, enabled=show_progress) as progress:
                while block := resp.read(_READ_BYTES):
                    got += len(block)
                    if got > max_bytes:
                        raise DataError(_too_big(url, f"more than {max_bytes} bytes", max_bytes))
                    out.write(block)
                    progress.update(len(block))
            if total is not None and got != total:
                raise DataError(f"{url}: download incomplete: got {got} of the {total} bytes the "
                                "server announced (the connection closed early); try again")
    except URLBlockedError as exc:
        raise DataError(f"{url}: refused: {exc}; downloads from loopback, private, link-local "
                        "and cloud metadata addresses are blocked (allow_private_urls=True "
                        "allows them for local use)") from None
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise DataError(f"{url}: no answer within {timeout:g} s (timeout)") from None
        raise DataError(f"{url}: cannot reach it ({exc.reason})") from None
    except TimeoutError:
        raise DataError(f"{url}: no answer within {timeout:g} s (timeout)") from None
    except http.client.IncompleteRead as exc:
        raise DataError(f"{url}: download incomplete: the connection closed early "
                        f"({exc}); try again") from None
    except (http.client.HTTPException, OSError) as exc:
        raise DataError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
    logger.info("downloaded %s (%d bytes)", url, got)


def _content_length(value: str | None) -> int | None:
    """The announced body size; None when absent or not a plain number (then unchecked)."""
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def _too_big(url: str, what: str, max_bytes: int) -> str:
    return (f"{url}: the body is {what}, over the download limit of {max_bytes} bytes; "
            f"raise max_download_bytes or download it yourself and pass the file")


def _last_match_end(pattern: re.Pattern[bytes], buf: bytes, start: int) -> int:
    end = 0
    for match in pattern.finditer(buf, start):
        end = match.end()
    return end


def _safe_cut(buf: bytes, searched: int = 0) -> int:
    """The last index where buf can be cut without changing GPT-2 tokens; 0 when none.
    buf[:searched] is known to hold no cut (a carry searched before), so it is not rescanned."""
    floor = max(0, searched - 2)  # a cut pattern spans 3 bytes: it may straddle the old end
    for window in _CUT_WINDOWS:
        start = floor if window is None else max(floor, len(buf) - window)
        for pattern in (_NEWLINE_CUT, _SPACE_CUT):
            cut = _last_match_end(pattern, buf, start)
            if cut:
                return cut
        if start == floor:
            break
    return 0


def _char_boundary(buf: bytes) -> int:
    """The last index that starts a UTF-8 character (not a 10xxxxxx continuation byte)."""
    for i in range(len(buf) - 1, max(len(buf) - 4, 0) - 1, -1):
        if buf[i] & 0xC0 != 0x80:
            return i
    return len(buf)


def _decode(raw: bytes, stats: DecodeStats) -> str:
    text = raw.decode("utf-8", errors="replace")
    # U+FFFD already present in valid input is not a replacement; count only new ones.
    stats.replaced += text.count(_REPLACEMENT) - raw.count(_REPLACEMENT_UTF8)
    return text


def iter_text_chunks(path: Path, *, chunk_bytes: int, stats: DecodeStats,
                     max_carry: int | None = None) -> Iterator[tuple[str, int]]:
    """Yield (text, n_raw_bytes) pieces of one file, each about `chunk_bytes` long.

    A piece ends at a safe cut (see _NEWLINE_CUT); with none within `max_carry` bytes
    (default 64 chunks, e.g. a huge file with no spaces) it ends at a character boundary.
    Invalid UTF-8 becomes U+FFFD and is counted in `stats`; a leading BOM is dropped."""
    max_carry = max_carry or 64 * chunk_bytes
    carry = b""
    first = True
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            if first and b"\x00" in block[:8192]:
                # Text never holds NUL bytes; model weights, archives and images do.
                raise DataError(f"{path}: looks like a binary file (NUL bytes in its first "
                                "8 KiB); pass UTF-8 text")
            buf = carry + block
            cut = _safe_cut(buf, searched=len(carry))
            if not cut and len(buf) >= max_carry:
                cut = _char_boundary(buf)
                stats.fallback_cuts += 1
            if not cut:
                carry = buf
                continue
            piece, carry = buf[:cut], buf[cut:]
            if first:
                piece, first = piece.removeprefix(b"\xef\xbb\xbf"), False
            yield _decode(piece, stats), cut
        if carry:
            piece = carry.removeprefix(b"\xef\xbb\xbf") if first else carry
            yield _decode(piece, stats), len(carry)
