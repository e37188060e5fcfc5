"""ModelAdminService on a real server: several models by name, every checkpoint format, only
from under the model roots, LOADING/READY/FAILED, loading and unloading while serving."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from server_harness import (
    ServerThread,
    field_violations,
    greedy,
    rpc_error,
    server_config,
    stream_request,
    tiny_byte_checkpoint,
    wait_for,
)

from nanollm.checkpoint import load_checkpoint, save_checkpoint
from nanollm.config import ModelConfig
from nanollm.hf_gpt2 import export_hf_gpt2
from nanollm.model import GPT
from nanollm.v1 import generate_pb2, model_admin_pb2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG = 4000
M = model_admin_pb2


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerThread]:
    config = server_config(tiny_byte_checkpoint(tmp_path / "tiny"), tmp_path,
                           max_tokens_limit=LONG)
    with ServerThread(config) as server:
        yield server


def load(srv: ServerThread, name: str, path: str, **kw: Any) -> model_admin_pb2.Model:
    return srv.admin.LoadModel(M.LoadModelRequest(name=name, path=path, **kw), timeout=60).model


def get(srv: ServerThread, name: str) -> model_admin_pb2.Model:
    return srv.admin.GetModel(M.GetModelRequest(name=name)).model


def named(request: Any, model: str) -> Any:
    request.model = model
    return request


def test_every_checkpoint_format_loads_by_name_and_serves(srv: ServerThread,
                                                          tmp_path: Path) -> None:
    ckpt = load_checkpoint(tmp_path / "tiny")
    torch.save({"model": ckpt.state_dict, "tokenizer": "byte", "model_args": dict(
        n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=257, bias=True)},
        (tmp_path / "nanogpt.pt"))
    export_hf_gpt2(tmp_path / "hf" / "tiny", ckpt.state_dict, ckpt.config)

    hf = load(srv, "hf-tiny", "hf/tiny", max_batch_size=2, dtype="float32")
    ng = load(srv, "nanogpt-tiny", str(tmp_path / "nanogpt.pt"))  # absolute, inside the root
    assert (hf.state, hf.source_kind, hf.source_path) == (M.MODEL_STATE_READY,
                                                          M.SOURCE_KIND_HF, "hf/tiny")
    assert (ng.source_kind, ng.source_path) == (M.SOURCE_KIND_NANOGPT, "nanogpt.pt")
    assert (hf.max_batch_size, hf.n_layer, hf.block_size, hf.vocab_size, hf.tokenizer) == (
        2, 2, 64, 257, "byte")
    assert hf.parameter_count == 35744 and hf.device == "cpu" and hf.dtype == "float32"
    assert hf.HasField("loaded_at") and not hf.is_default

    listed = srv.admin.ListModels(M.ListModelsRequest())
    assert [m.name for m in listed.models] == ["gpt", "hf-tiny", "nanogpt-tiny"]
    assert listed.default_model == "gpt"
    assert listed.models[0].source_kind == M.SOURCE_KIND_NANOLLM
    # The same weights in three formats generate the same tokens.
    outputs = {name: srv.generate.Generate(named(greedy("ROMEO:", 10), name)).choices[0].token_ids
               for name in ("gpt", "hf-tiny", "nanogpt-tiny")}
    assert outputs["hf-tiny"] == outputs["gpt"] == outputs["nanogpt-tiny"]


def test_loading_a_model_does_not_stall_requests_to_others(srv: ServerThread,
                                                           tmp_path: Path) -> None:
    big = GPT(ModelConfig(n_layer=8, n_head=8, n_embd=512, block_size=64, vocab_size=257,
                          tokenizer="byte"))
    save_checkpoint(tmp_path / "big", big.state_dict(), big.config, tokenizer="byte")
    arrivals: list[float] = []
    stream = srv.generate.StreamGenerate(stream_request("busy", LONG))
    next(stream)

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled at the end
            for _ in stream:
                arrivals.append(time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    started = time.monotonic()
    loading = srv.admin.LoadModel.future(M.LoadModelRequest(name="big", path="big"))
    states, codes = set(), set()
    while not loading.done():
        try:  # NOT_FOUND until the server has registered the load
            states.add(get(srv, "big").state)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
        try:
            srv.generate.Tokenize(generate_pb2.TokenizeRequest(model="big", text="hi"))
        except grpc.RpcError as err:
            codes.add((err.code(), err.details()))
    assert loading.result().model.state == M.MODEL_STATE_READY
    ended = time.monotonic()
    assert M.MODEL_STATE_LOADING in states
    assert (grpc.StatusCode.UNAVAILABLE, "model 'big' is still loading; retry shortly") in codes
    during = [t for t in arrivals if started < t < ended]
    assert len(during) >= 5, f"{len(during)} tokens of 'gpt' in {ended - started:.2f} s of loading"
    stream.cancel()
    reader.join(10)


def test_load_refusals(srv: ServerThread, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    tiny_byte_checkpoint(outside)
    os.symlink(outside, tmp_path / "link-out")
    cases: list[tuple[dict[str, Any], grpc.StatusCode, list[str]]] = [
        ({"name": "", "path": "tiny"}, grpc.StatusCode.INVALID_ARGUMENT, ["name"]),
        ({"name": "bad/name", "path": "tiny"}, grpc.StatusCode.INVALID_ARGUMENT, ["name"]),
        ({"name": "m"}, grpc.StatusCode.INVALID_ARGUMENT, ["path"]),
        ({"name": "m", "path": "tiny", "device": "tpu"}, grpc.StatusCode.INVALID_ARGUMENT,
         ["device"]),
        ({"name": "m", "path": "tiny", "dtype": "int8"}, grpc.StatusCode.INVALID_ARGUMENT,
         ["dtype"]),
        ({"name": "m", "path": "tiny", "max_batch_size": 0}, grpc.StatusCode.INVALID_ARGUMENT,
         ["max_batch_size"]),
        ({"name": "", "path": "", "dtype": "x"}, grpc.StatusCode.INVALID_ARGUMENT,
         ["name", "path", "dtype"]),
        ({"name": "m", "path": f"../{outside.name}"}, grpc.StatusCode.INVALID_ARGUMENT, ["path"]),
        ({"name": "m", "path": str(outside)}, grpc.StatusCode.INVALID_ARGUMENT, ["path"]),
        ({"name": "m", "path": "link-out"}, grpc.StatusCode.INVALID_ARGUMENT, ["path"]),
        ({"name": "m", "path": "nothing-here"}, grpc.StatusCode.NOT_FOUND, []),
        ({"name": "gpt", "path": "tiny"}, grpc.StatusCode.ALREADY_EXISTS, []),
    ]
    for fields, code, bad_fields in cases:
        err = rpc_error(lambda f=fields: srv.admin.LoadModel(M.LoadModelRequest(**f)))
        assert (err.code(), [f for f, _ in field_violations(err)]) == (code, bad_fields), fields
    err = rpc_error(lambda: srv.admin.LoadModel(M.LoadModelRequest(name="m", path="link-out")))
    assert "'link-out' is outside the model roots" in err.details()
    assert [m.name for m in srv.admin.ListModels(M.ListModelsRequest()).models] == ["gpt"]


class _RunsCode:
    """Unpickling this would run a shell command; weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_is_not_a_model_fails_listed_as_failed_and_nothing_is_unpickled(
        srv: ServerThread, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    torch.save({"model": _RunsCode(marker), "model_args": {}}, tmp_path / "evil" / "ckpt.pt")
    err = rpc_error(lambda: load(srv, "evil", "evil"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err)[0][0] == "path" and "weights_only" in err.details()
    assert err.details().startswith("invalid request: path: evil/ckpt.pt: ")  # no server paths
    assert not marker.exists()

    failed = get(srv, "evil")
    assert failed.state == M.MODEL_STATE_FAILED and "weights_only" in failed.reason
    err = rpc_error(lambda: srv.generate.Generate(named(greedy("hi"), "evil")))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "loading it failed" in err.details()
    err = rpc_error(lambda: srv.admin.SetDefaultModel(M.SetDefaultModelRequest(name="evil")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert srv.admin.UnloadModel(M.UnloadModelRequest(name="evil")).name == "evil"
    assert [m.name for m in srv.admin.ListModels(M.ListModelsRequest()).models] == ["gpt"]


def test_a_failed_load_is_replaced_by_the_next_load_of_its_name(srv: ServerThread,
                                                                   tmp_path: Path) -> None:
    """A typo in the path leaves a FAILED entry; loading the right path under the same name
    replaces it (no unload first). A READY model keeps its name."""
    (tmp_path / "empty").mkdir()
    err = rpc_error(lambda: load(srv, "retry", "empty"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert get(srv, "retry").state == M.MODEL_STATE_FAILED
    tiny_byte_checkpoint(tmp_path / "good", seed=2)
    assert load(srv, "retry", "good").state == M.MODEL_STATE_READY
    assert get(srv, "retry").source_path == "good"
    err = rpc_error(lambda: load(srv, "retry", "good"))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "a model named 'retry' already exists; unload it first or pick another name")
    assert srv.admin.UnloadModel(M.UnloadModelRequest(name="retry")).name == "retry"


def test_unload_waits_for_in_flight_requests(srv: ServerThread, tmp_path: Path) -> None:
    tiny_byte_checkpoint(tmp_path / "second", seed=1)
    load(srv, "second", "second")
    stream = srv.generate.StreamGenerate(named(stream_request("finish me", 300), "second"))
    first = next(stream)
    unloading = srv.admin.UnloadModel.future(M.UnloadModelRequest(name="second"))
    wait_for(lambda: srv.server.registry.default_name == "gpt"
             and "second" not in [m.name for m in srv.admin.ListModels(M.ListModelsRequest())
                                  .models if m.state == M.MODEL_STATE_READY], 5, "UNLOADING")
    err = rpc_error(lambda: srv.generate.Generate(named(greedy("new"), "second")))
    assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND,
                                           "model 'second' is not loaded")
    rest = list(stream)
    assert len(first.token_ids) + sum(len(m.token_ids) for m in rest) == 300
    assert rest[-1].finish_reason == generate_pb2.FINISH_REASON_LENGTH
    response = unloading.result(30)
    assert (response.completed_requests, response.cancelled_requests) == (1, 0)
    assert [m.name for m in srv.admin.ListModels(M.ListModelsRequest()).models] == ["gpt"]


def test_unload_can_cancel_in_flight_requests(srv: ServerThread, tmp_path: Path) -> None:
    tiny_byte_checkpoint(tmp_path / "second", seed=1)
    load(srv, "second", "second")
    stream = srv.generate.StreamGenerate(named(stream_request("cancel me", LONG), "second"))
    next(stream)
    unary = srv.generate.Generate.future(named(greedy("me too", LONG), "second"))
    wait_for(lambda: srv.engine("second").num_running == 2, 5, "both requests running")

    response = srv.admin.UnloadModel(M.UnloadModelRequest(name="second", cancel_inflight=True))
    assert (response.completed_requests, response.cancelled_requests) == (0, 2)
    rest = list(stream)  # ends normally, its choice marked CANCELLED
    assert rest[-1].finish_reason == generate_pb2.FINISH_REASON_CANCELLED
    assert rest[-1].HasField("timings")
    with pytest.raises(grpc.RpcError) as err:
        unary.result(10)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    assert err.value.details() == "model 'second' was unloaded"


def test_default_model_can_change_and_go_away(srv: ServerThread, tmp_path: Path) -> None:
    tiny_byte_checkpoint(tmp_path / "second", seed=1)
    load(srv, "second", "second")
    switched = srv.admin.SetDefaultModel(M.SetDefaultModelRequest(name="second"))
    assert switched.previous_default == "gpt" and switched.model.is_default
    assert srv.generate.Generate(greedy("hi", 2)).model == "second"
    assert not get(srv, "gpt").is_default

    srv.admin.UnloadModel(M.UnloadModelRequest(name="second"))
    assert srv.admin.ListModels(M.ListModelsRequest()).default_model == ""
    err = rpc_error(lambda: srv.generate.Generate(greedy("hi", 2)))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.NOT_FOUND, "no default model is set; name a model (ListModels shows "
                                   "them)")
    assert srv.generate.Generate(named(greedy("hi", 2), "gpt")).model == "gpt"
    loaded = load(srv, "third", "second", set_default=True)
    assert loaded.is_default and srv.generate.Generate(greedy("hi", 2)).model == "third"


def test_an_engine_fault_fails_its_requests_with_internal_and_the_engine_goes_on(
        srv: ServerThread, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = load_checkpoint(tiny_byte_checkpoint(tmp_path / "broken"))
    ckpt.state_dict["transformer.wte.weight"][3, 0] = float("nan")  # tied: NaN logits of 3
    save_checkpoint(tmp_path / "broken", ckpt.state_dict, ckpt.config, tokenizer="byte")
    load(srv, "broken", "broken")
    with caplog.at_level("ERROR", logger="server.engine"):
        err = rpc_error(lambda: srv.generate.Generate(named(greedy("hi", 4, temperature=1.0),
                                                            "broken")))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INTERNAL, "generation failed on the server; its log has the details")
    assert any("decode step failed" in r.getMessage() and r.exc_info for r in caplog.records)
    # greedy decoding never samples, so NaN logits do not stop it: the engine still serves
    assert len(srv.generate.Generate(named(greedy("hi", 4), "broken")).choices[0].token_ids) == 4
