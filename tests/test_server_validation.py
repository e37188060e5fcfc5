"""Bad requests get INVALID_ARGUMENT with a google.rpc.BadRequest violation per bad field (or
another specific status), never INTERNAL. The model: 64-token context, 4 batch slots; the
server's max_tokens limit is 500."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from server_harness import (
    ServerThread,
    field_violations,
    rpc_error,
    server_config,
    tiny_byte_checkpoint,
)

from nanollm.v1 import generate_pb2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    config = server_config(tiny_byte_checkpoint(root / "tiny"), root, max_batch_size=4,
                           max_tokens_limit=500)
    with ServerThread(config) as server:
        yield server


# (case, request fields, sampling fields, expected field violations)
BAD_GENERATE: list[tuple[str, dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
    ("empty prompt", {"prompt": ""}, {}, [("prompt", "must not be empty")]),
    ("prompt over the context", {"prompt": "x" * 64}, {},
     [("prompt", "is 64 tokens; model 'gpt' accepts at most 63 (its context is 64)")]),
    ("prompt and token ids", {"prompt_token_ids": [72, 105]}, {},
     [("prompt_token_ids", "give prompt or prompt_token_ids, not both")]),
    ("token id outside the vocabulary", {"prompt": "", "prompt_token_ids": [72, 9999]}, {},
     [("prompt_token_ids", "ids must be below 257 (the vocabulary of model 'gpt'), got 9999")]),
    ("token ids over the context", {"prompt": "", "prompt_token_ids": [72] * 64}, {},
     [("prompt_token_ids", "is 64 tokens; model 'gpt' accepts at most 63 (its context is 64)")]),
    ("max_tokens 0", {}, {"max_tokens": 0},
     [("sampling.max_tokens", "must be >= 1 (0 only with prompt_logprobs)")]),
    ("max_tokens over the limit", {}, {"max_tokens": 501},
     [("sampling.max_tokens", "must be <= 500 (the server's limit), got 501")]),
    ("negative temperature", {}, {"temperature": -0.5},
     [("sampling.temperature", "must be in [0, 100], got -0.5")]),
    ("nan temperature", {}, {"temperature": math.nan},
     [("sampling.temperature", "must be in [0, 100], got nan")]),
    ("top_p 0", {}, {"top_p": 0.0}, [("sampling.top_p", "must be in (0, 1], got 0")]),
    ("top_p over 1", {}, {"top_p": 1.5}, [("sampling.top_p", "must be in (0, 1], got 1.5")]),
    ("n 0", {}, {"n": 0},
     [("sampling.n", "must be in [1, 4] (the model's batch size), got 0")]),
    ("n over the batch", {}, {"n": 5},
     [("sampling.n", "must be in [1, 4] (the model's batch size), got 5")]),
    ("too many stop strings", {}, {"stop": list("abcdefghi")},
     [("sampling.stop", "at most 8 stop sequences, got 9")]),
    ("top_logprobs over 20", {}, {"logprobs": True, "top_logprobs": 21},
     [("sampling.top_logprobs", "must be in [0, 20], got 21")]),
    ("top_logprobs without logprobs", {}, {"top_logprobs": 2},
     [("sampling.top_logprobs", "needs sampling.logprobs = true")]),
    ("empty stop string", {}, {"stop": ["ok", ""]},
     [("sampling.stop[1]", "must not be empty")]),
    ("too long stop string", {}, {"stop": ["s" * 65]},
     [("sampling.stop[0]", "must be at most 64 characters, got 65")]),
    ("repetition penalty 0", {}, {"repetition_penalty": 0.0},
     [("sampling.repetition_penalty", "must be in (0, 10], got 0")]),
    ("presence penalty 3", {}, {"presence_penalty": 3.0},
     [("sampling.presence_penalty", "must be in [-2, 2], got 3")]),
    ("frequency penalty -3", {}, {"frequency_penalty": -3.0},
     [("sampling.frequency_penalty", "must be in [-2, 2], got -3")]),
    ("seed 2^63", {}, {"seed": 2**63}, [("sampling.seed", "must be below 2^63, got "
                                                          "9223372036854775808")]),
    ("request id too long", {"request_id": "r" * 129}, {},
     [("request_id", "must be at most 128 printable characters")]),
    ("every bad field at once", {"prompt": ""}, {"max_tokens": 0, "top_p": 2.0, "n": 9},
     [("prompt", "must not be empty"),
      ("sampling.max_tokens", "must be >= 1 (0 only with prompt_logprobs)"),
      ("sampling.top_p", "must be in (0, 1], got 2"),
      ("sampling.n", "must be in [1, 4] (the model's batch size), got 9")]),
]


@pytest.mark.parametrize("rpc", ["Generate", "StreamGenerate"])
@pytest.mark.parametrize(("case", "fields", "sampling", "violations"), BAD_GENERATE,
                         ids=[c[0] for c in BAD_GENERATE])
def test_bad_generation_fields(srv: ServerThread, rpc: str, case: str, fields: dict[str, Any],
                               sampling: dict[str, Any],
                               violations: list[tuple[str, str]]) -> None:
    args = {"prompt": "hello", **fields}
    if rpc == "Generate":
        request: Any = generate_pb2.GenerateRequest(
            **args, sampling=generate_pb2.SamplingParams(**sampling))
        err = rpc_error(lambda: srv.generate.Generate(request))
    else:
        request = generate_pb2.StreamGenerateRequest(
            **args, sampling=generate_pb2.SamplingParams(**sampling))
        err = rpc_error(lambda: list(srv.generate.StreamGenerate(request)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == violations
    assert err.details() == "invalid request: " + "; ".join(f"{f}: {d}" for f, d in violations)


def test_limits_themselves_are_accepted(srv: ServerThread) -> None:
    request = generate_pb2.GenerateRequest(prompt="x" * 63, sampling=generate_pb2.SamplingParams(
        max_tokens=3, temperature=0.0, top_p=1.0, n=4, stop=["abcd" * 16] * 4, seed=2**63 - 1,
        presence_penalty=-2.0, frequency_penalty=2.0, repetition_penalty=10.0))
    response = srv.generate.Generate(request)
    assert len(response.choices) == 4 and response.usage.prompt_tokens == 63


def test_token_id_prompts_generate_what_their_text_does(srv: ServerThread) -> None:
    """prompt_token_ids is the prompt as the model sees it: "hello" in bytes, and a prompt no
    text encodes to (the end-of-text token, 256)."""
    sampling = generate_pb2.SamplingParams(max_tokens=8, temperature=0.0, stop_at_eos=False)
    text = srv.generate.Generate(generate_pb2.GenerateRequest(prompt="hello", sampling=sampling))
    ids = srv.generate.Generate(generate_pb2.GenerateRequest(
        prompt_token_ids=list(b"hello"), sampling=sampling))
    assert ids.choices[0].token_ids == text.choices[0].token_ids
    assert ids.usage.prompt_tokens == 5
    streamed = list(srv.generate.StreamGenerate(generate_pb2.StreamGenerateRequest(
        prompt_token_ids=[256], sampling=sampling)))
    assert sum(len(m.token_ids) for m in streamed) == 8
    assert streamed[-1].usage.prompt_tokens == 1


def test_unset_knobs_take_the_server_defaults(srv: ServerThread) -> None:
    # GenerationConfig defaults: 100 new tokens at most, temperature 0.8 (so a seed is drawn)
    response = srv.generate.Generate(generate_pb2.GenerateRequest(prompt="hello"))
    (choice,) = response.choices
    assert len(choice.token_ids) <= 100 and choice.seed > 0


def test_errors_carry_no_details_where_none_apply(srv: ServerThread) -> None:
    err = rpc_error(lambda: srv.generate.Generate(generate_pb2.GenerateRequest(
        model="missing", prompt="hi")))
    assert err.code() == grpc.StatusCode.NOT_FOUND and field_violations(err) == []
