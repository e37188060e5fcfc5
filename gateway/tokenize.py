"""POST /tokenize and POST /detokenize (the shape vLLM's server uses), over GenerateService.

    POST /tokenize   {"model": "gpt", "prompt": "Hello world"}
                  -> {"model": "gpt", "count": 2, "tokens": [15496, 995],
                      "token_strs": ["Hello", " world"]}
    POST /tokenize   {"model": "gpt", "messages": [...]}      (the chat template's prompt)
    POST /detokenize {"model": "gpt", "tokens": [15496, 995]} -> {"model": "gpt",
                                                                  "prompt": "Hello world"}

An empty or missing model means the server's default model.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.backend import Backend
from gateway.chat import render_chat
from gateway.errors import ERRORS, grpc_error_response
from gateway.openai_models import ChatMessage, TokenId
from nanollm.client_errors import NanoLLMError
from nanollm.v1 import generate_pb2

router = APIRouter(tags=["Tokens"])

# The contract's field names -> this API's.
RENAMES = {"text": "prompt", "token_ids": "tokens"}


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as the OpenAI routes' bodies

    model: str = ""
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("prompt: give either prompt or messages")
        return self


class TokenizeResponse(BaseModel):
    model: str
    count: int
    tokens: list[int]
    token_strs: list[str]


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as the OpenAI routes' bodies

    model: str = ""
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    model: str
    prompt: str


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS,
             summary="Split a prompt (or a chat's messages) into the model's tokens")
async def tokenize(body: TokenizeRequest, request: Request) -> Response:
    backend: Backend = request.app.state.backend
    text = body.prompt if body.messages is None else render_chat(body.messages)
    try:
        reply = await backend.unary(request, backend.generate.Tokenize,
                                    generate_pb2.TokenizeRequest(model=body.model, text=text))
    except NanoLLMError as err:
        return grpc_error_response(err, RENAMES)
    result = TokenizeResponse(model=reply.model, count=reply.count, tokens=list(reply.token_ids),
                              token_strs=list(reply.tokens))
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/detokenize", response_model=DetokenizeResponse,
             responses=ERRORS, summary="Turn token ids back into text")
async def detokenize(body: DetokenizeRequest, request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        reply = await backend.unary(request, backend.generate.Detokenize,
                                    generate_pb2.DetokenizeRequest(model=body.model,
                                                                   token_ids=body.tokens))
    except NanoLLMError as err:
        return grpc_error_response(err, RENAMES)
    result = DetokenizeResponse(model=reply.model, prompt=reply.text)
    return Response(result.model_dump_json(), media_type="application/json")
