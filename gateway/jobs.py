"""REST for training jobs (the web UI's training page), translated to TrainService.

    POST   /v1/train/jobs                     start: {"spec": JobSpec}
    POST   /v1/train/jobs:upload              start with a text file: multipart form with
                                              `spec` (JobSpec as JSON) and `file` (the text)
    GET    /v1/train/jobs?states=JOB_STATE_RUNNING    list, oldest first
    GET    /v1/train/jobs/{job_id}            one job
    GET    /v1/train/jobs/{job_id}:watch      server-sent events: a snapshot, then live events
    POST   /v1/train/jobs/{job_id}:cancel     cancel (a running job saves its checkpoint first)
    POST   /v1/train/jobs/{job_id}:resume     resume: {"max_iters": N} optional
    DELETE /v1/train/jobs/{job_id}            delete a job that is not queued or running

Paths are those of the contract's google.api.http annotations; bodies are the contract's
messages in protobuf's JSON mapping with proto field names (proto/nanollm/v1/train.proto). The
watch stream sends each WatchJobResponse as `data: {...}` and ends with `data: [DONE]` once the
job has ended (an error after the first event: one `data: {"error": ...}` frame, then [DONE]).
With API keys configured these need the admin key.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import grpc
import grpc.aio
from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.admin import ADMIN_ERRORS, as_json
from gateway.backend import Backend
from gateway.errors import GatewayError, grpc_error_response
from gateway.sse import EventStreamResponse, openai_events
from nanollm.client_errors import NanoLLMError, from_rpc_error
from nanollm.v1 import train_pb2

router = APIRouter(prefix="/v1/train", tags=["Training jobs (admin)"])
NOT_FOUND = "job_not_found"

SPEC_EXAMPLE = {"spec": {
    "name": "shakespeare-tiny", "scratch": {"n_layer": 4, "n_head": 4, "n_embd": 128,
                                            "block_size": 128, "tokenizer": "byte"},
    "training": {"max_iters": 500, "batch_size": 16, "learning_rate": 0.001},
    "data": {"path": "shakespeare.txt"}, "device": "cpu", "load_when_done": True}}


async def call(request: Request, method: Callable[..., Any], message: Message) -> JSONResponse:
    """A unary TrainService call as JSON, or its error (a missing job is `job_not_found`). It
    completes even if the client leaves first: a job started or cancelled is not undone."""
    backend: Backend = request.app.state.backend
    try:
        return as_json(await backend.call(request, method, message))
    except NanoLLMError as err:
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and TOO_LARGE.search(err.message):
            raise _too_large(err.message, message.ByteSize()) from None
        return grpc_error_response(err, not_found=NOT_FOUND)


# gRPC's own refusal of a message over the server's receive limit (which is sized to its
# max_upload_bytes): a 400 about the upload, not RESOURCE_EXHAUSTED's "429, retry".
TOO_LARGE = re.compile(r"Received message larger than max \(\d+ vs\. (\d+)\)")


def _too_large(grpc_message: str, size: int) -> GatewayError:
    match = TOO_LARGE.search(grpc_message)
    limit = f" (at most {match.group(1)} bytes per request)" if match else ""
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"text: the request is {size} bytes, more than the server accepts"
                        f"{limit}; its max_upload_bytes limits uploaded text", "text")


def parse(data: Any, message: Message, what: str) -> Message:
    """JSON (proto field names or JSON names) into a contract message; a bad one is a 400."""
    if not isinstance(data, dict):  # protobuf reads [] as {} and fails on null with TypeError
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{what}: must be a JSON object, got {json.dumps(data)[:40]}", what)
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {exc}", what) from None


@router.post("/jobs", responses=ADMIN_ERRORS, summary="Start a training job")
async def start_job(request: Request,
                    body: Annotated[dict[str, Any], Body(examples=[SPEC_EXAMPLE])]
                    ) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return await call(request, backend.train.StartJob,
                      parse(body, train_pb2.StartJobRequest(), "spec"))


@router.post("/jobs:upload", responses=ADMIN_ERRORS,
             summary="Start a training job on an uploaded text file")
async def start_job_upload(request: Request,
                           spec: Annotated[str, Form(description="JobSpec as JSON")],
                           file: Annotated[UploadFile, File(description="UTF-8 text")]
                           ) -> JSONResponse:
    backend: Backend = request.app.state.backend
    try:
        spec_data = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"spec: not valid JSON: {exc}",
                           "spec") from None
    job_spec = parse(spec_data, train_pb2.JobSpec(), "spec")
    assert isinstance(job_spec, train_pb2.JobSpec)
    job_spec.data.text = await file.read()
    return await call(request, backend.train.StartJob, train_pb2.StartJobRequest(spec=job_spec))


@router.get("/jobs", responses=ADMIN_ERRORS, summary="List training jobs, oldest first")
async def list_jobs(request: Request,
                    states: Annotated[list[str] | None, Query(
                        description="only jobs in these states, e.g. JOB_STATE_RUNNING")] = None
                    ) -> JSONResponse:
    backend: Backend = request.app.state.backend
    message = parse({"states": states or []}, train_pb2.ListJobsRequest(), "states")
    return await call(request, backend.train.ListJobs, message)


# Before GET /jobs/{job_id}, whose pattern would take "<id>:watch" as an id.
@router.get("/jobs/{job_id}:watch", responses=ADMIN_ERRORS,
            summary="Follow a job: server-sent events (a snapshot, then live events)")
async def watch_job(job_id: str, request: Request, exclude_logs: bool = False) -> Response:
    backend: Backend = request.app.state.backend
    call = backend.train.WatchJob(train_pb2.WatchJobRequest(job_id=job_id,
                                                            exclude_logs=exclude_logs),
                                  **backend.call_options(request, deadline=False))
    # The snapshot comes first: an unknown job is a 404, not an empty 200 stream.
    try:
        first = await backend.until_disconnect(request, _read(call), call.cancel)
    except NanoLLMError as err:
        return grpc_error_response(err, not_found=NOT_FOUND)
    return EventStreamResponse(openai_events(_events(call, first), not_found=NOT_FOUND))


async def _read(call: grpc.aio.UnaryStreamCall) -> Message | None:
    try:
        message = await call.read()
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None
    return None if message is grpc.aio.EOF else message


async def _events(call: grpc.aio.UnaryStreamCall, first: Message | None) -> AsyncIterator[str]:
    try:
        message = first
        while message is not None:
            yield json.dumps(json_format.MessageToDict(message,
                                                       preserving_proto_field_name=True))
            message = await _read(call)
    finally:
        call.cancel()  # a watcher that leaves changes nothing for the job


@router.get("/jobs/{job_id}", responses=ADMIN_ERRORS, summary="Describe one training job")
async def get_job(job_id: str, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return await call(request, backend.train.GetJob, train_pb2.GetJobRequest(job_id=job_id))


@router.post("/jobs/{job_id}:cancel", responses=ADMIN_ERRORS,
             summary="Cancel a job (a running one saves its checkpoint first)")
async def cancel_job(job_id: str, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return await call(request, backend.train.CancelJob,
                      train_pb2.CancelJobRequest(job_id=job_id))


@router.post("/jobs/{job_id}:resume", responses=ADMIN_ERRORS,
             summary="Resume an interrupted, cancelled or failed job (or train one longer)")
async def resume_job(job_id: str, request: Request,
                     body: Annotated[dict[str, Any] | None, Body(
                         examples=[{"max_iters": 1000}])] = None) -> JSONResponse:
    backend: Backend = request.app.state.backend
    message = parse(body or {}, train_pb2.ResumeJobRequest(), "max_iters")
    assert isinstance(message, train_pb2.ResumeJobRequest)
    message.job_id = job_id
    return await call(request, backend.train.ResumeJob, message)


@router.delete("/jobs/{job_id}", responses=ADMIN_ERRORS,
               summary="Delete a job that is not queued or running, with its checkpoints")
async def delete_job(job_id: str, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return await call(request, backend.train.DeleteJob,
                      train_pb2.DeleteJobRequest(job_id=job_id))
