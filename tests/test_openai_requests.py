"""Requests an OpenAI client may send that the gateway must read as OpenAI does: token-id
prompts, `max_tokens: null`, values of the wrong JSON type, a body sent without the JSON
content type, and chat content parts the model cannot read. The OpenAI SDK (and raw HTTP where
the SDK cannot send the body) against a real gateway in front of a real gRPC server serving a
tiny model with the GPT-2 tokenizer, so token ids are GPT-2's ("Hello world" = [15496, 995])."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import openai
import pytest
import torch
from gateway_harness import GatewayThread
from openai import OpenAI
from server_harness import ServerThread, server_config

from nanollm.checkpoint import save_checkpoint
from nanollm.config import ModelConfig
from nanollm.model import GPT
from nanollm.v1 import generate_pb2

HELLO_WORLD = [15496, 995]


@dataclass
class Stack:
    server: ServerThread
    gateway: GatewayThread
    http: httpx2.Client

    def sdk(self) -> OpenAI:
        return OpenAI(base_url=f"{self.gateway.url}/v1", api_key="not-needed", max_retries=0,
                      timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("openai_requests")
    torch.manual_seed(0)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=50257,
                         tokenizer="gpt2")
    model = GPT(config).eval()
    checkpoint = save_checkpoint(tmp / "tiny_gpt2", model.state_dict(), config,
                                 tokenizer="gpt2", provenance={"note": "test"})
    with ServerThread(server_config(checkpoint, tmp)) as server, \
            GatewayThread(server.target) as gateway, \
            httpx2.Client(base_url=gateway.url, timeout=60) as http:
        yield Stack(server, gateway, http)


def test_token_id_prompts_are_the_text_they_encode(stack: Stack) -> None:
    client = stack.sdk()
    knobs = dict(model="gpt", max_tokens=5, temperature=0, extra_body={"stop_at_eos": False})
    text = client.completions.create(prompt="Hello world", **knobs)  # type: ignore[arg-type]
    ids = client.completions.create(prompt=HELLO_WORLD, echo=True, **knobs)  # type: ignore[arg-type]
    assert ids.choices[0].text == "Hello world" + text.choices[0].text
    assert ids.usage is not None and ids.usage.prompt_tokens == 2
    both = client.completions.create(prompt=[HELLO_WORLD, [15496]], **knobs)  # type: ignore[arg-type]
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[0].text == text.choices[0].text
    assert both.usage is not None and both.usage.prompt_tokens == 3
    chunks = list(client.completions.create(prompt=HELLO_WORLD, stream=True, **knobs))  # type: ignore[arg-type]
    assert "".join(c.choices[0].text for c in chunks) == text.choices[0].text


def test_token_id_prompts_no_text_encodes_to_are_sent_as_ids(stack: Stack) -> None:
    """Half of a UTF-8 character (5099) and the end-of-text token (50256): no text encodes to
    them, yet the model sees exactly these ids (its prompt_tokens count them)."""
    client = stack.sdk()
    for ids in ([5099], [50256], [15496, 50256, 995]):
        reply = client.completions.create(model="gpt", prompt=ids, max_tokens=3, temperature=0,
                                          extra_body={"stop_at_eos": False})
        direct = stack.server.generate.Generate(generate_pb2.GenerateRequest(
            prompt_token_ids=ids, sampling=generate_pb2.SamplingParams(
                max_tokens=3, temperature=0.0, stop_at_eos=False)))
        assert reply.choices[0].text == direct.choices[0].text
        assert reply.usage is not None and reply.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize(("prompt", "message"), [
    ([15496] * 64, "prompt: is 64 tokens; model 'gpt' accepts at most 63 (its context is 64)"),
    ([15496, 60000], "prompt: 60000 is not a token id (the vocabulary has 50257)"),
    ([[15496], []], "prompt: a token-id prompt must not be empty"),
    ([15496, -1], "prompt: must be a string, a list of strings, a list of token ids "
                  "(integers >= 0) or a list of such lists"),
    (["Hello", 995], "prompt: must be a string, a list of strings, a list of token ids "
                     "(integers >= 0) or a list of such lists"),
])
def test_token_id_prompts_that_cannot_be_sent(stack: Stack, prompt: list[object],
                                              message: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        stack.sdk().completions.create(model="gpt", prompt=prompt, max_tokens=2)  # type: ignore[arg-type]
    assert bad.value.body == {"message": message, "type": "invalid_request_error",
                              "param": "prompt", "code": None}


def test_echo_with_logprobs_scores_the_prompt(stack: Stack) -> None:
    """As lm-eval and other scorers use it: echo + logprobs gives the prompt's tokens with their
    log-probabilities (the first None), then the generated ones; max_tokens 0 scores only."""
    client = stack.sdk()
    direct = stack.server.generate.Generate(generate_pb2.GenerateRequest(
        prompt="Hello world, hello", sampling=generate_pb2.SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=2,
            prompt_logprobs=True)))
    for max_tokens in (0, 1):
        reply = client.completions.create(model="gpt", prompt="Hello world, hello", echo=True,
                                          logprobs=2, max_tokens=max_tokens, temperature=0)
        (choice,) = reply.choices
        lp = choice.logprobs
        assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
        n_prompt = len(direct.prompt_token_ids)
        assert len(lp.tokens) == n_prompt + max_tokens
        assert "".join(lp.tokens) == choice.text
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1:n_prompt] == pytest.approx(list(direct.prompt_logprobs))
        assert all(len(top) >= 2 for top in lp.top_logprobs[1:])
        assert lp.text_offset[:2] == [0, len(lp.tokens[0])]
        assert reply.usage is not None and reply.usage.completion_tokens == max_tokens
    assert choice.text == "Hello world, hello" + direct.choices[0].text
    plain = client.completions.create(model="gpt", prompt="Hello world, hello", echo=True,
                                      logprobs=0, max_tokens=0).choices[0].logprobs
    assert plain is not None and plain.token_logprobs is not None and plain.tokens is not None
    assert plain.token_logprobs[1:] == pytest.approx(list(direct.prompt_logprobs))
    assert plain.top_logprobs == [None] + [{t: lp} for t, lp in zip(
        plain.tokens[1:], plain.token_logprobs[1:], strict=True)]


def test_null_max_tokens_is_openais_default(stack: Stack) -> None:
    reply = stack.sdk().completions.create(model="gpt", prompt="Hello", max_tokens=None,
                                           extra_body={"stop_at_eos": False})
    assert reply.usage is not None and reply.usage.completion_tokens == 16
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("stream", "yes", "stream: Input should be a valid boolean"),
    ("max_tokens", True, "max_tokens: Input should be a valid integer"),
    ("max_tokens", "5", "max_tokens: Input should be a valid integer"),
    ("n", 1.5, "n: Input should be a valid integer"),
    ("temperature", "0.5", "temperature: Input should be a valid number"),
    ("echo", 1, "echo: Input should be a valid boolean"),
])
def test_values_of_the_wrong_type_are_refused(stack: Stack, field: str, value: object,
                                              message: str) -> None:
    """OpenAI refuses them; a lenient parser would turn "yes" into true and "5" into 5."""
    reply = stack.http.post("/v1/completions", json={"model": "gpt", "prompt": "Hi",
                                                     field: value})
    assert reply.status_code == 400
    assert reply.json() == {"error": {"message": message, "type": "invalid_request_error",
                                      "param": field, "code": None}}


def test_integers_are_numbers_and_whole_numbers_integers(stack: Stack) -> None:
    """JSON has one number type: 1 is a valid temperature, and 2.0 (as JSON Schema reads it)
    a valid max_tokens."""
    reply = stack.http.post("/v1/completions", json={
        "model": "gpt", "prompt": "Hi", "max_tokens": 2.0, "n": 1.0, "temperature": 1,
        "top_p": 1, "stop_at_eos": False})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 2


def test_a_body_without_the_json_content_type_says_so(stack: Stack) -> None:
    """What `curl -d '{...}'` without `-H "Content-Type: application/json"` gets."""
    body = b'{"model": "gpt", "prompt": "Hi", "max_tokens": 2}'
    reply = stack.http.post("/v1/completions", content=body,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        "the request body must be a JSON object; send it with Content-Type: application/json "
        "(got application/x-www-form-urlencoded)")
    sent = stack.http.post("/v1/completions", content=body,
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert sent.status_code == 200


def test_chat_content_that_is_not_text(stack: Stack) -> None:
    client = stack.sdk()
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt", messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}])  # type: ignore[list-item]
    assert bad.value.body == {
        "message": "messages.0.content: only text content parts are supported, got a part of "
                   "type 'image_url'",
        "type": "invalid_request_error", "param": "messages", "code": None}
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="gpt", messages=[
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}])
    assert empty.value.body["message"] == (  # type: ignore[index]
        'messages.1.content: must be a string or a list of {"type": "text", "text": ...} parts')
