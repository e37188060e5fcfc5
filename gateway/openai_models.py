"""The OpenAI request and response bodies the gateway speaks, as pydantic models.

Fields follow the order of OpenAI's API reference; what nanoLLM adds is in a marked section at
the end of each model. Requests own their translation to the gRPC contract
(`to_sampling_params()`). Fields OpenAI defines but nanoLLM cannot honour (tools, logit_bias,
suffix, the most likely alternatives' log-probabilities) are refused with a 400 that names the
field, never ignored. Value ranges (temperature, top_p, penalties, n) are checked by the gRPC
server, which reports every bad field at once; only what the contract's types cannot carry is
checked here. Unset sampling knobs take the server's defaults, except completions' max_tokens,
which defaults to 16 as in OpenAI's reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from nanollm.v1 import generate_pb2

UINT32_MAX = 2**32 - 1
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's max_tokens default for completions
SEED_LIMIT = 2**63  # the contract's seed range is [0, 2^63)
MAX_STOP_SEQUENCES = 4  # as OpenAI allows


def _stop_count(value: str | list[str] | None) -> str | list[str] | None:
    if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(value)}")
    return value


def _integral(value: object) -> object:
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema reads it); 2.5 stays a
    # float, which the strict int check refuses.
    return int(value) if isinstance(value, float) and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)
Count = Annotated[int, Field(ge=1, le=UINT32_MAX), INTEGRAL]
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT), INTEGRAL]
TopK = Annotated[int, Field(ge=0, le=UINT32_MAX), INTEGRAL]
TokenId = Annotated[int, Field(ge=0, le=UINT32_MAX), INTEGRAL]
Stop = Annotated[str | list[str] | None, AfterValidator(_stop_count)]


class _Request(BaseModel):
    # OpenAI answers an unknown argument, or a value of the wrong JSON type ("stream": "yes",
    # "max_tokens": true or "5"), with a 400; so does the gateway (nothing is ignored or
    # coerced). Strict mode still takes an integer where a number is expected.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class StreamOptions(_Request):
    include_usage: bool | None = None


class _Sampling(_Request):
    """What completions and chat share: their knobs become the contract's SamplingParams."""

    if TYPE_CHECKING:  # declared by each request, in OpenAI's order
        frequency_penalty: float | None
        logit_bias: dict[str, float] | None
        n: int | None
        presence_penalty: float | None
        seed: int | None
        stop: str | list[str] | None
        stream: bool | None
        stream_options: StreamOptions | None
        temperature: float | None
        top_p: float | None
        top_k: int | None
        repetition_penalty: float | None
        stop_at_eos: bool | None

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options is not None and self.stream_options.include_usage)

    @property
    def choices_per_prompt(self) -> int:
        return self.n or 1

    def _params(self, max_tokens: int | None, logprobs: bool, extra_stop: list[str],
                top_logprobs: int = 0) -> generate_pb2.SamplingParams:
        params = generate_pb2.SamplingParams(stop=self.stop_list + extra_stop)
        knobs = {"max_tokens": max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                 "top_k": self.top_k, "repetition_penalty": self.repetition_penalty,
                 "presence_penalty": self.presence_penalty,
                 "frequency_penalty": self.frequency_penalty, "seed": self.seed, "n": self.n,
                 "stop_at_eos": self.stop_at_eos}
        for name, value in knobs.items():
            if value is not None:
                setattr(params, name, value)
        if logprobs:
            params.logprobs = True
            if top_logprobs:
                params.top_logprobs = top_logprobs
        return params

    @model_validator(mode="after")
    def _check_shared(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        if self.logit_bias:
            raise ValueError("logit_bias: not supported")
        return self


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    model: str
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    best_of: Count | None = None
    echo: bool | None = False
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5), INTEGRAL] | None = None
    # None (absent or null): DEFAULT_COMPLETION_TOKENS; 0 only to score an echoed prompt
    max_tokens: Annotated[int, Field(ge=0, le=UINT32_MAX), INTEGRAL] | None = None
    n: Count | None = None
    presence_penalty: float | None = None
    seed: Seed | None = None
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None

    # --- nanoLLM extras -------------------------------------------------------------------
    top_k: TopK | None = None
    repetition_penalty: float | None = None
    stop_at_eos: bool | None = None

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _one_prompt_error(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # One message instead of one per shape the union tried.
        try:
            return handler(value)
        except ValidationError:
            raise ValueError("must be a string, a list of strings, a list of token ids "
                             "(integers >= 0) or a list of such lists") from None

    @model_validator(mode="after")
    def _check_supported(self) -> CompletionRequest:
        if isinstance(self.prompt, list):
            if not self.prompt:
                raise ValueError("prompt: must not be an empty list")
            if any(isinstance(p, list) and not p for p in self.prompt):
                raise ValueError("prompt: a token-id prompt must not be empty")
        if self.suffix:
            raise ValueError("suffix: not supported")
        if self.best_of is not None and self.best_of != self.choices_per_prompt:
            raise ValueError("best_of: only best_of equal to n is supported")
        if self.scores_prompt and self.stream:
            raise ValueError("logprobs: with echo, only without stream (the prompt is scored "
                             "in one answer)")
        if self.max_tokens == 0 and not self.scores_prompt:
            raise ValueError("max_tokens: 0 only with echo and logprobs (to score the prompt)")
        return self

    @property
    def scores_prompt(self) -> bool:
        """echo with logprobs: the prompt's tokens get log-probabilities too."""
        return bool(self.echo) and self.logprobs is not None

    @property
    def prompt_list(self) -> list[str | list[int]]:
        """Each prompt: a text or a list of token ids (turned into text by the route)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):  # one prompt of token ids
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def to_sampling_params(self) -> generate_pb2.SamplingParams:
        limit = DEFAULT_COMPLETION_TOKENS if self.max_tokens is None else self.max_tokens
        params = self._params(limit, self.wants_logprobs, [], self.logprobs or 0)
        if self.scores_prompt:
            params.prompt_logprobs = True
        return params


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    """A system, developer (the same as system), user or assistant message."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @field_validator("content", mode="wrap")
    @classmethod
    def _one_content_error(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # One message instead of one per shape the union tried; other part types (images,
        # audio, files) are named, as the model reads text only.
        try:
            return handler(value)
        except ValidationError:
            kinds = [p.get("type") for p in value if isinstance(p, dict)] \
                if isinstance(value, list) else []
            other = next((k for k in kinds if k != "text"), None)
            if isinstance(other, str):
                raise ValueError(f"only text content parts are supported, got a part of "
                                 f"type {other!r}") from None
            raise ValueError('must be a string or a list of {"type": "text", "text": ...} '
                             "parts") from None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    max_completion_tokens: Count | None = None
    max_tokens: Count | None = None
    n: Count | None = None
    presence_penalty: float | None = None
    seed: Seed | None = None
    stop: Stop = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), INTEGRAL] | None = None
    top_p: float | None = None
    user: str | None = None

    # --- nanoLLM extras -------------------------------------------------------------------
    top_k: TopK | None = None
    repetition_penalty: float | None = None
    stop_at_eos: bool | None = None

    @model_validator(mode="after")
    def _check_supported(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    def to_sampling_params(self, template_stop: list[str] | None = None
                           ) -> generate_pb2.SamplingParams:
        """`template_stop`: the chat template's end-of-turn strings, added to the client's."""
        limit = self.max_completion_tokens or self.max_tokens
        return self._params(limit, bool(self.logprobs), template_stop or [],
                            self.top_logprobs or 0)


# ---------------------------------------------------------------------------------------------
# Responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    text_offset: list[int]
    token_logprobs: list[float | None]  # None: an echoed prompt's first token
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(BaseModel):
    finish_reason: str | None
    index: int
    logprobs: CompletionLogprobs | None
    text: str


class Completion(BaseModel):
    """A completions response, and (with `finish_reason` None until a choice ends) the chunks
    of a completions stream."""

    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    # OpenAI names the backend configuration here; nanoLLM has no such identifier.
    system_fingerprint: None = None
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    bytes: list[int]
    logprob: float


class TokenLogprob(BaseModel):
    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    content: str
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"


class ChatChoice(BaseModel):
    finish_reason: str
    index: int
    logprobs: ChoiceLogprobs | None
    message: AssistantMessage


class ChatCompletion(BaseModel):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    object: Literal["chat.completion"] = "chat.completion"
    # OpenAI names the backend configuration here; nanoLLM has no such identifier.
    system_fingerprint: None = None
    usage: Usage


class Delta(BaseModel):
    content: str | None = None
    role: Literal["assistant"] | None = None


class ChatChunkChoice(BaseModel):
    delta: Delta
    index: int
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None

    @field_serializer("delta")
    def _only_set_delta(self, delta: Delta) -> dict[str, str]:
        # OpenAI sends {"content": "..."} or {} (the last chunk), never null members.
        return delta.model_dump(exclude_none=True)


class ChatCompletionChunk(BaseModel):
    id: str
    choices: list[ChatChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    # OpenAI names the backend configuration here; nanoLLM has no such identifier.
    system_fingerprint: None = None
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "nanollm"

    # --- nanoLLM extras -------------------------------------------------------------------
    max_model_len: int = Field(description="context length: prompt plus generated tokens")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
