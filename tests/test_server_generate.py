"""GenerateService over a real gRPC channel: concurrency, streaming, n, stop, logprobs, tokenize.

One real server (port 0, a tiny byte-level model) serves the whole module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from server_harness import (
    ServerThread,
    field_violations,
    greedy,
    rpc_error,
    server_config,
    stream_request,
    tiny_byte_checkpoint,
)

from nanollm.v1 import generate_pb2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [f"{word} {i}:" for i, word in enumerate(
    ["ROMEO", "JULIET", "To be", "x", "Once upon a time", "abc", "The king", "Hi",
     "What light", "Good night", "Wherefore", "a b c d e", "Exit", "HAMLET", "0", "Thou art"])]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("models")
    with ServerThread(server_config(tiny_byte_checkpoint(root / "tiny"), root)) as server:
        yield server


def sampling_for(mode: str, i: int) -> dict[str, Any]:
    if mode == "greedy":
        return dict(temperature=0.0)
    return dict(temperature=0.9, top_k=40, top_p=0.9, seed=1000 + i, frequency_penalty=0.3)


def collect_stream(srv: ServerThread, request: generate_pb2.StreamGenerateRequest
                   ) -> list[generate_pb2.StreamGenerateResponse]:
    return list(srv.generate.StreamGenerate(request, timeout=60))


@pytest.mark.parametrize("mode", ["greedy", "seeded"])
def test_16_concurrent_streams_each_get_exactly_what_they_get_alone(srv: ServerThread,
                                                                    mode: str) -> None:
    requests = [stream_request(p, 32, **sampling_for(mode, i)) for i, p in enumerate(PROMPTS)]
    alone = [collect_stream(srv, r) for r in requests]
    steps_before = srv.engine().steps

    results: list[list[generate_pb2.StreamGenerateResponse]] = [[] for _ in requests]
    start = threading.Barrier(len(requests))

    def run(i: int) -> None:
        start.wait()
        results[i] = collect_stream(srv, requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    def tokens(messages: list[generate_pb2.StreamGenerateResponse]) -> list[int]:
        return [t for m in messages for t in m.token_ids]

    def text(messages: list[generate_pb2.StreamGenerateResponse]) -> str:
        return "".join(m.text for m in messages)

    for i in range(len(requests)):
        assert tokens(results[i]) == tokens(alone[i]), f"stream {i} differs from its solo run"
        assert text(results[i]) == text(alone[i])
        assert len(tokens(results[i])) == 32
    # They really shared the batch: one after another they would take 16 * 32 steps (together,
    # about 32 on an idle machine; a busy one delays some arrivals).
    assert srv.engine().steps - steps_before < 16 * 32 // 2


def test_generate_returns_what_the_stream_sends(srv: ServerThread) -> None:
    sampling = dict(temperature=0.8, seed=7, n=3, logprobs=True)
    response = srv.generate.Generate(greedy("ROMEO:", 12, **sampling), timeout=30)
    messages = collect_stream(srv, stream_request("ROMEO:", 12, **sampling))

    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.seed for c in response.choices] == [7, 8, 9]
    for choice in response.choices:
        mine = [m for m in messages if m.index == choice.index]
        assert "".join(m.text for m in mine) == choice.text
        assert [t for m in mine for t in m.token_ids] == list(choice.token_ids)
        assert len(choice.logprobs) == len(choice.token_ids) == 12
        assert [m.finish_reason for m in mine][-1] == generate_pb2.FINISH_REASON_LENGTH
        assert all(m.finish_reason == 0 for m in mine[:-1])
        assert mine[-1].HasField("seed") and mine[-1].seed == choice.seed
        assert not any(m.HasField("seed") for m in mine[:-1])
    assert response.usage.prompt_tokens == 6 and response.usage.completion_tokens == 36
    assert response.usage.total_tokens == 42
    # usage is a running total; only the last message carries timings
    assert [m.usage.completion_tokens for m in messages] == list(range(1, 37))
    assert messages[-1].HasField("timings") and messages[-1].timings.total_ms > 0
    assert not any(m.HasField("timings") for m in messages[:-1])
    t = response.timings
    assert 0 <= t.queue_ms <= t.total_ms and t.prefill_ms > 0 and t.decode_ms > 0
    assert response.model == "gpt" and len(response.request_id) == 32


def test_top_logprobs_give_the_best_alternatives_at_each_position(srv: ServerThread) -> None:
    """Greedy: the chosen token is the best alternative, with its own logprob; the stream sends
    the same alternatives as Generate, one entry per token."""
    sampling = dict(logprobs=True, top_logprobs=3)
    choice = srv.generate.Generate(greedy("HAMLET:", 8, **sampling), timeout=30).choices[0]
    messages = collect_stream(srv, stream_request("HAMLET:", 8, temperature=0.0, **sampling))
    assert len(choice.top_logprobs) == len(choice.token_ids) == 8
    for token, logprob, top in zip(choice.token_ids, choice.logprobs, choice.top_logprobs,
                                   strict=True):
        assert len(top.token_ids) == 3 and top.token_ids[0] == token
        assert top.logprobs[0] == logprob
        assert list(top.logprobs) == sorted(top.logprobs, reverse=True)
    streamed = [top for m in messages for top in m.top_logprobs]
    assert streamed == list(choice.top_logprobs)
    plain = srv.generate.Generate(greedy("HAMLET:", 8, logprobs=True)).choices[0]
    assert not plain.top_logprobs and list(plain.logprobs) == list(choice.logprobs)


def test_prompt_logprobs_score_the_prompt_with_or_without_generating(srv: ServerThread) -> None:
    """prompt_logprobs: one log-probability per prompt token after the first, the same whether
    the request then generates or not (max_tokens 0: no tokens, finish LENGTH); StreamGenerate
    refuses it."""
    score = greedy("HAMLET: To be", 0, logprobs=True, top_logprobs=2, prompt_logprobs=True)
    scored = srv.generate.Generate(score, timeout=30)
    assert list(scored.prompt_token_ids) == list(b"HAMLET: To be")
    assert len(scored.prompt_logprobs) == len(scored.prompt_top_logprobs) == 12
    assert all(lp <= 0 for lp in scored.prompt_logprobs)
    assert all(len(top.token_ids) == 2 for top in scored.prompt_top_logprobs)
    (choice,) = scored.choices
    assert (list(choice.token_ids), choice.text) == ([], "")
    assert choice.finish_reason == generate_pb2.FINISH_REASON_LENGTH
    assert scored.usage.completion_tokens == 0

    both = srv.generate.Generate(greedy("HAMLET: To be", 4, prompt_logprobs=True), timeout=30)
    assert list(both.prompt_logprobs) == list(scored.prompt_logprobs)
    assert len(both.choices[0].token_ids) == 4 and not both.prompt_top_logprobs
    plain = srv.generate.Generate(greedy("HAMLET: To be", 4), timeout=30)
    assert plain.choices[0].token_ids == both.choices[0].token_ids and not plain.prompt_logprobs

    err = rpc_error(lambda: collect_stream(srv, stream_request("HAMLET:", 4,
                                                               prompt_logprobs=True)))
    assert field_violations(err) == [("sampling.prompt_logprobs",
                                      "only with Generate (not StreamGenerate)")]
    err = rpc_error(lambda: srv.generate.Generate(greedy("HAMLET:", 0, prompt_logprobs=True,
                                                         n=2)))
    assert field_violations(err) == [("sampling.n", "must be 1 when max_tokens is 0 (the "
                                                    "prompt is scored once)")]


def test_choice_i_of_n_is_reproduced_alone_with_seed_plus_i(srv: ServerThread) -> None:
    three = srv.generate.Generate(greedy("JULIET:", 10, temperature=1.0, seed=41, n=3))
    second = srv.generate.Generate(greedy("JULIET:", 10, temperature=1.0, seed=42, n=1))
    assert second.choices[0].token_ids == three.choices[1].token_ids
    assert three.choices[0].token_ids != three.choices[1].token_ids


def test_unseeded_requests_report_the_seed_that_reproduces_them(srv: ServerThread) -> None:
    first = srv.generate.Generate(greedy("abc", 10, temperature=1.0)).choices[0]
    again = srv.generate.Generate(greedy("abc", 10, temperature=1.0, seed=first.seed)).choices[0]
    assert again.token_ids == first.token_ids


def test_stop_string_ends_the_text_before_it_and_is_never_streamed(srv: ServerThread) -> None:
    full = srv.generate.Generate(greedy("To be", 30)).choices[0]
    stop = full.text[8:10]  # two characters from the middle of the greedy text
    cut = full.text.index(stop)
    messages = collect_stream(srv, stream_request("To be", 30, stop=[stop]))
    streamed = "".join(m.text for m in messages)
    assert streamed == full.text[:cut]
    assert messages[-1].finish_reason == generate_pb2.FINISH_REASON_STOP
    unary = srv.generate.Generate(greedy("To be", 30, stop=[stop])).choices[0]
    assert unary.text == full.text[:cut] and unary.finish_reason == generate_pb2.FINISH_REASON_STOP


def test_penalties_and_max_tokens_apply_per_request(srv: ServerThread) -> None:
    plain = srv.generate.Generate(greedy("x", 20)).choices[0]
    penalised = srv.generate.Generate(greedy("x", 20, repetition_penalty=3.0,
                                             presence_penalty=2.0)).choices[0]
    # The random model repeats a favourite byte; penalties push it to others.
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))
    short = srv.generate.Generate(greedy("x", 3)).choices[0]
    assert list(short.token_ids) == list(plain.token_ids[:3])
    assert short.finish_reason == generate_pb2.FINISH_REASON_LENGTH
    assert not plain.logprobs  # only when asked for


def test_request_id_is_echoed(srv: ServerThread) -> None:
    req = greedy("Hi", 2)
    req.request_id = "client-chosen-42"
    assert srv.generate.Generate(req).request_id == "client-chosen-42"
    stream = stream_request("Hi", 2)
    stream.request_id = "stream-7"
    assert {m.request_id for m in collect_stream(srv, stream)} == {"stream-7"}


def test_tokenize_and_detokenize(srv: ServerThread) -> None:
    response = srv.generate.Tokenize(generate_pb2.TokenizeRequest(text="hé!"))
    assert list(response.token_ids) == [104, 195, 169, 33] and response.count == 4
    assert list(response.tokens) == ["h", "\ufffd", "\ufffd", "!"]  # halves of "é"
    assert response.model == "gpt"
    back = srv.generate.Detokenize(generate_pb2.DetokenizeRequest(token_ids=[104, 195, 169]))
    assert back.text == "hé"
    err = rpc_error(lambda: srv.generate.Detokenize(
        generate_pb2.DetokenizeRequest(token_ids=[104, 300])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == [("token_ids[1]", "300 is not a token id (the vocabulary "
                                                      "has 257)")]


@pytest.mark.parametrize("rpc", ["Generate", "StreamGenerate", "Tokenize", "Detokenize"])
def test_an_unknown_model_is_not_found(srv: ServerThread, rpc: str) -> None:
    requests = {"Generate": greedy("hi"), "StreamGenerate": stream_request("hi"),
                "Tokenize": generate_pb2.TokenizeRequest(text="hi"),
                "Detokenize": generate_pb2.DetokenizeRequest(token_ids=[1])}
    request = requests[rpc]
    request.model = "no-such-model"
    call = getattr(srv.generate, rpc)
    err = rpc_error(lambda: list(call(request)) if rpc == "StreamGenerate" else call(request))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "model 'no-such-model' is not loaded"


def test_every_request_is_logged_with_its_timings(srv: ServerThread, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    req = greedy("Hi", 4)
    req.request_id = "logged-1"
    with caplog.at_level("INFO", logger="server.requests"):
        srv.generate.Generate(req)
    (line,) = [r.getMessage() for r in caplog.records if "logged-1" in r.getMessage()]
    assert line.startswith("Generate model=gpt request_id=logged-1 prompt_tokens=2 n=1 "
                           "completion_tokens=4 queue_ms=")
    assert "prefill_ms=" in line and "decode_ms=" in line and line.split()[-2] == "status=OK"
