"""GET /v1/models and GET /v1/models/{id}: the server's READY models, as OpenAI lists them.

They are read from ModelAdminService, so a server configured with API keys answers them for any
of its keys (users may read the model list, as over gRPC); no key or an unknown one is 401.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.backend import Backend
from gateway.errors import ERRORS
from gateway.openai_models import ModelCard, ModelList
from nanollm.v1 import model_admin_pb2

router = APIRouter(tags=["OpenAI"])


def model_card(model: model_admin_pb2.Model) -> ModelCard:
    return ModelCard(id=model.name, created=model.loaded_at.seconds,
                     max_model_len=model.block_size)


@router.get("/v1/models", response_model=ModelList, responses=ERRORS,
            summary="List the models that serve requests")
async def list_models(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    reply = await backend.unary(request, backend.admin.ListModels,
                                model_admin_pb2.ListModelsRequest())
    cards = [model_card(m) for m in reply.models if m.state == model_admin_pb2.MODEL_STATE_READY]
    return Response(ModelList(data=cards).model_dump_json(), media_type="application/json")


@router.get("/v1/models/{model_id}", response_model=ModelCard,
            responses=ERRORS, summary="Describe one model")
async def get_model(model_id: str, request: Request) -> Response:
    backend: Backend = request.app.state.backend
    reply = await backend.unary(request, backend.admin.GetModel,
                                model_admin_pb2.GetModelRequest(name=model_id))
    return Response(model_card(reply.model).model_dump_json(), media_type="application/json")
