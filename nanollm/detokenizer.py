"""Streaming text out of a token stream: incremental UTF-8 decoding and stop sequences.

Byte-level tokenizers (GPT-2 BPE, the byte tokenizer) can split one character over several
tokens: the emoji "😀" is four bytes, and may be four tokens. Decoding each token on its own would
stream broken characters, so `IncrementalDetokenizer` keeps the bytes of an unfinished character
until the character is complete.

A stop sequence can also span tokens ("END" arriving as "E", "N", "D"). `StopMatcher` holds back
any tail of the text that could still become a stop sequence, so a stop sequence never reaches a
client, not even in part.

    detok, stop = IncrementalDetokenizer(tokenizer), StopMatcher(["\\n\\n"])
    for token in tokens:
        text, matched = stop.push(detok.push(token))
        emit(text)
        if matched:
            break
    else:
        emit(stop.push(detok.flush())[0] + stop.flush())
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from nanollm.tokenizer import Tokenizer


class IncrementalDetokenizer:
    """Token ids in, one at a time; only complete UTF-8 text out."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        # The stdlib incremental decoder keeps the bytes of a partial character between calls and
        # turns invalid bytes into U+FFFD, exactly as decoding the whole byte string would.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """The text that token completes: "" while a character is still partial."""
        return self._decoder.decode(self.tokenizer.decode_bytes([token]), final=False)

    def flush(self) -> str:
        """End of stream: bytes of a character that never completed become U+FFFD."""
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Text pieces in; text that is safe to emit out, trimmed at the first stop sequence."""

    def __init__(self, stop_sequences: Sequence[str] = ()) -> None:
        if any(not isinstance(s, str) or not s for s in stop_sequences):
            raise ValueError("stop sequences must be non-empty strings")
        self.stop_sequences = list(stop_sequences)
        self._held = ""  # text not emitted yet because it may be the start of a stop sequence
        self.matched = False

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop sequence has been found).

        After a match everything from the stop sequence on is dropped, and later pushes return
        ("", True).
        """
        if self.matched:
            return "", True
        if not self.stop_sequences:
            return text, False
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stop_sequences) if i >= 0]
        if hits:
            self.matched = True
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._partial_match_length(buffer)
        self._held = buffer[len(buffer) - keep:]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """End of stream without a match: the held-back text was not a stop sequence after all."""
        held, self._held = self._held, ""
        return held

    def _partial_match_length(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self.stop_sequences:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
