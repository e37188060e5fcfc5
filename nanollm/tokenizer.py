"""Tokenizers: GPT-2 BPE through tiktoken (from vocabulary files shipped in the package, never
downloaded) and a byte tokenizer for tiny models.

    tok = load_tokenizer("gpt2")
    tok.encode("Hello world")        # [15496, 995]
    tok.decode_bytes([15496, 995])   # b"Hello world"  (bytes: a token may hold half a character)
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Protocol

import tiktoken

# The regex GPT-2 splits text with before BPE (tiktoken's r50k pattern, identical to OpenAI's).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
ENDOFTEXT = "<|endoftext|>"


def require_utf8(text: str, what: str = "text") -> str:
    """`text`, or ValueError when it cannot be UTF-8 encoded.

    Python turns bytes that are not UTF-8 (in argv, a file name, a terminal line) into lone
    surrogates U+DC80..U+DCFF; tiktoken would encode those silently as replacement characters.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        bad = (f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF
               else f"lone surrogate U+{code:04X}")
        raise ValueError(f"{what} is not UTF-8 text ({bad} at character {exc.start})") from None
    return text


class Tokenizer(Protocol):
    """What the rest of nanoLLM needs from a tokenizer."""

    name: str
    vocab_size: int
    eot_token: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def decode_bytes(self, ids: list[int]) -> bytes: ...


def gpt2_vocab_dir() -> Path:
    """The shipped GPT-2 vocabulary: encoder.json and vocab.bpe (MIT, OpenAI)."""
    return Path(str(resources.files("nanollm") / "assets" / "gpt2"))


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters used in encoder.json."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (50257 tokens) on tiktoken's fast encoder."""

    name = "gpt2"

    def __init__(self) -> None:
        encoder_path = gpt2_vocab_dir() / "encoder.json"
        encoder: dict[str, int] = json.loads(encoder_path.read_text(encoding="utf-8"))
        byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        ranks = {
            bytes(byte_decoder[ch] for ch in token): rank
            for token, rank in encoder.items()
            if token != ENDOFTEXT
        }
        eot = encoder[ENDOFTEXT]
        self._enc = tiktoken.Encoding(
            name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
            special_tokens={ENDOFTEXT: eot},
        )
        self.eot_token: int | None = eot  # 50256
        self.vocab_size = self._enc.n_vocab  # 50257

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text to ids. `<|endoftext|>` in user text is plain text unless allow_special."""
        require_utf8(text, "text to encode")
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids, errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self._enc.decode_bytes(ids)


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-text token 256. For tiny models."""

    name = "byte"

    def __init__(self) -> None:
        self.eot_token: int | None = 256
        self.vocab_size = 257

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        require_utf8(text, "text to encode")
        if allow_special and ENDOFTEXT in text:
            out: list[int] = []
            for i, part in enumerate(text.split(ENDOFTEXT)):
                if i:
                    out.append(256)
                out.extend(part.encode("utf-8"))
            return out
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(i for i in ids if 0 <= i < 256)


# "char" is the name nanoGPT's shakespeare_char uses; over UTF-8 bytes it is lossless for any
# text, which a table of the characters seen in one file is not.
_TOKENIZERS = {"gpt2": GPT2Tokenizer, "byte": ByteTokenizer, "char": ByteTokenizer}


@functools.cache
def load_tokenizer(name: str = "gpt2") -> Tokenizer:
    """The tokenizer a checkpoint or dataset names ('gpt2', 'byte' or 'char')."""
    try:
        cls = _TOKENIZERS[name]
    except KeyError:
        choices = sorted(_TOKENIZERS)
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {choices}") from None
    return cls()
