"""The shipped GPT-2 vocabulary must reproduce OpenAI's encoding exactly, offline."""

import pytest

from nanollm.tokenizer import ByteTokenizer, GPT2Tokenizer, load_tokenizer


def test_gpt2_reference_vectors() -> None:
    tok = load_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.eot_token == 50256
    assert tok.vocab_size == 50257
    assert tok.encode(" the") == [262]
    assert tok.encode("<|endoftext|>", allow_special=True) == [50256]


def test_special_token_in_user_text_is_plain_text() -> None:
    tok = load_tokenizer("gpt2")
    ids = tok.encode("<|endoftext|>")
    assert 50256 not in ids
    assert tok.decode(ids) == "<|endoftext|>"


@pytest.mark.parametrize(
    "text",
    ["héllo 世界 🙂", "it's  \n\n  done", "tabs\tand\r\nCRLF", "", "数字 12345 and ü"],
)
def test_gpt2_round_trip(text: str) -> None:
    tok = load_tokenizer("gpt2")
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_matches_transformers_tokenizer(tmp_path) -> None:
    """Same ids as transformers' GPT2Tokenizer built from the same shipped files."""
    import shutil

    from transformers import GPT2TokenizerFast

    from nanollm.tokenizer import gpt2_vocab_dir

    shutil.copy(gpt2_vocab_dir() / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_vocab_dir() / "vocab.bpe", tmp_path / "merges.txt")
    hf = GPT2TokenizerFast.from_pretrained(str(tmp_path))
    text = "The quick brown fox 🦊 jumps over 13 lazy dogs; naïve café — 東京."
    assert load_tokenizer("gpt2").encode(text) == hf.encode(text)


def test_decode_bytes_keeps_partial_characters() -> None:
    tok = load_tokenizer("gpt2")
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the emoji spans several byte-level tokens
    assert b"".join(tok.decode_bytes([i]) for i in ids) == "🙂".encode()


def test_byte_tokenizer() -> None:
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer)
    assert tok.vocab_size == 257 and tok.eot_token == 256
    assert tok.encode("hé") == [104, 195, 169]
    assert tok.decode(tok.encode("日本 🙂")) == "日本 🙂"
    assert tok.encode("a<|endoftext|>b", allow_special=True) == [97, 256, 98]
    assert load_tokenizer("char") is not None


def test_unknown_tokenizer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe9'"):
        load_tokenizer("bpe9")


def test_loading_is_cached() -> None:
    assert load_tokenizer("gpt2") is load_tokenizer("gpt2")
    assert isinstance(load_tokenizer("gpt2"), GPT2Tokenizer)


@pytest.mark.parametrize("name", ["gpt2", "byte"])
@pytest.mark.parametrize("text, detail", [
    ("hi\udcff", "byte 0xff at character 2"),  # how Python decodes a non-UTF-8 byte in argv
    ("\ud800x", "lone surrogate U+D800 at character 0"),
])
def test_text_that_is_not_utf8_is_refused(name: str, text: str, detail: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        load_tokenizer(name).encode(text)
    assert str(exc_info.value) == f"text to encode is not UTF-8 text ({detail})"
