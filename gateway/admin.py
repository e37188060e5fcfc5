"""REST for managing models (the web UI's models page), translated to ModelAdminService.

    GET    /v1/admin/models                       every model, in any state, and the default
    GET    /v1/admin/models/{name}                one model
    POST   /v1/admin/models                       load: {"name", "path" or "job_id", "device",
                                                  "dtype", "max_batch_size", "set_default"}
    DELETE /v1/admin/models/{name}?cancel_inflight=true    unload
    POST   /v1/admin/models/{name}:setDefault     make a READY model the default

The paths are those of the contract's google.api.http annotations (so Envoy's transcoder
exposes the same ones) and the bodies are the contract's messages in protobuf's JSON mapping
with the proto field names (`source_path`, `is_default`; enums by name such as
"MODEL_STATE_READY"). With API keys configured these need the admin key (reading the models
needs only a user key). Errors are OpenAI
error bodies (gateway/errors.py). A change, once asked for, completes even if the browser
leaves before the answer (reloading the page does not abort a load).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.backend import Backend
from gateway.errors import ERRORS
from gateway.openai_models import UINT32_MAX
from nanollm.v1 import model_admin_pb2

router = APIRouter(prefix="/v1/admin", tags=["Models (admin)"])
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 409: ERRORS[400]}


class LoadModelBody(BaseModel):
    """What LoadModel takes; see proto/nanollm/v1/model_admin.proto."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str | None = Field(None, description="checkpoint folder, HF folder or ckpt.pt under "
                                               "a model root")
    job_id: str | None = Field(None, description="a training job whose checkpoint to load")
    device: str | None = Field(None, description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    dtype: str | None = Field(None, description="'auto', 'float32', 'bfloat16' or 'float16'")
    max_batch_size: Annotated[int, Field(ge=0, le=UINT32_MAX)] | None = None
    set_default: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> LoadModelBody:
        if (self.path is None) == (self.job_id is None):
            raise ValueError("path: give either path or job_id")
        return self

    def to_pb(self) -> model_admin_pb2.LoadModelRequest:
        request = model_admin_pb2.LoadModelRequest(name=self.name, set_default=self.set_default)
        for field in ("path", "job_id", "device", "dtype", "max_batch_size"):
            value = getattr(self, field)
            if value is not None:
                setattr(request, field, value)
        return request


def as_json(message: Message) -> JSONResponse:
    return JSONResponse(json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


@router.get("/models", responses=ADMIN_ERRORS, summary="List every model and the default")
async def list_models(request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return as_json(await backend.unary(request, backend.admin.ListModels,
                                       model_admin_pb2.ListModelsRequest()))


@router.get("/models/{name}", responses=ADMIN_ERRORS, summary="Describe one model")
async def get_model(name: str, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return as_json(await backend.unary(request, backend.admin.GetModel,
                                       model_admin_pb2.GetModelRequest(name=name)))


@router.post("/models", responses=ADMIN_ERRORS,
             summary="Load a model; answers once it is READY")
async def load_model(body: LoadModelBody, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return as_json(await backend.call(request, backend.admin.LoadModel, body.to_pb()))


@router.delete("/models/{name}", responses=ADMIN_ERRORS,
               summary="Unload a model (its in-flight requests finish, or are cancelled)")
async def unload_model(name: str, request: Request, cancel_inflight: bool = False
                       ) -> JSONResponse:
    backend: Backend = request.app.state.backend
    message = model_admin_pb2.UnloadModelRequest(name=name, cancel_inflight=cancel_inflight)
    return as_json(await backend.call(request, backend.admin.UnloadModel, message))


@router.post("/models/{name}:setDefault", responses=ADMIN_ERRORS,
             summary="Make a READY model the default")
async def set_default_model(name: str, request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    return as_json(await backend.call(request, backend.admin.SetDefaultModel,
                                       model_admin_pb2.SetDefaultModelRequest(name=name)))
