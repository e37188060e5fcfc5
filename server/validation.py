"""Requests -> domain objects, with every bad field collected into one InvalidArgumentError.

    req = validate_generate(pb_request, model.limits, defaults, max_tokens_limit=4096)
    req.prompt_ids, req.config (GenerationConfig), req.max_tokens, req.n, req.seed

A request is checked as a whole: a client that sends three bad fields hears about all three
(google.rpc.BadRequest field violations, with proto field paths such as `sampling.top_p`).
Unset sampling knobs (proto3 `optional`) take the server's GenerationConfig defaults.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from nanollm.config import ConfigError, GenerationConfig
from nanollm.device import resolve_device
from nanollm.sampling import SEED_MODULUS, random_seed
from nanollm.tokenizer import Tokenizer
from nanollm.v1 import generate_pb2, model_admin_pb2
from server.errors import FieldViolation, InvalidArgumentError

# OpenAI allows 4 stop sequences, and the gateway's chat template adds one of its own; long ones
# only cost matching time per token.
MAX_STOP_SEQUENCES = 8
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_STOP_LENGTH = 64
MAX_REQUEST_ID_LENGTH = 128
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MAX_BATCH_SIZE = 1024


# GenerateRequest and StreamGenerateRequest have the same fields.
SamplingRequest = generate_pb2.GenerateRequest | generate_pb2.StreamGenerateRequest

@dataclass(frozen=True)
class ModelLimits:
    """What a request is checked against: the model it goes to."""

    name: str
    tokenizer: Tokenizer
    block_size: int
    max_batch_size: int

    @property
    def max_prompt_tokens(self) -> int:
        return self.block_size - 1  # room for the first generated token


@dataclass
class GenerationRequest:
    """A validated generation request: n choices of one prompt."""

    request_id: str
    model: str
    prompt_ids: list[int]
    config: GenerationConfig  # the sampling settings every choice uses (its seed: `seed`)
    max_tokens: int
    n: int
    seed: int  # choice i samples with row_seed(seed, i)
    score_prompt: bool = False  # sampling.prompt_logprobs: choice 0 scores the prompt


def validate_generate(request: SamplingRequest, limits: ModelLimits, defaults: GenerationConfig,
                      max_tokens_limit: int) -> GenerationRequest:
    """The domain request, or InvalidArgumentError listing every bad field."""
    bad: list[FieldViolation] = []
    request_id = _request_id(request.request_id, bad)
    prompt_ids = _prompt_ids(request.prompt, list(request.prompt_token_ids), limits, bad)
    s = request.sampling  # proto3 optional fields: HasField says whether the client sent one

    def given(name: str) -> bool:
        return s.HasField(name)  # type: ignore[arg-type]

    score_prompt = given("prompt_logprobs") and s.prompt_logprobs
    if score_prompt and isinstance(request, generate_pb2.StreamGenerateRequest):
        bad.append(("sampling.prompt_logprobs", "only with Generate (not StreamGenerate)"))
    max_tokens = min(defaults.max_new_tokens, max_tokens_limit)
    if given("max_tokens"):
        max_tokens = s.max_tokens
        if max_tokens < 1 and not score_prompt:
            bad.append(("sampling.max_tokens", "must be >= 1 (0 only with prompt_logprobs)"))
        elif max_tokens > max_tokens_limit:
            bad.append(("sampling.max_tokens", f"must be <= {max_tokens_limit} (the server's "
                                               f"limit), got {max_tokens}"))
    knobs = {
        "temperature": _number(s, "temperature", defaults.temperature, 0.0, 100.0, bad),
        "top_p": _number(s, "top_p", defaults.top_p, 0.0, 1.0, bad, low_open=True),
        "repetition_penalty": _number(s, "repetition_penalty", defaults.repetition_penalty,
                                      0.0, 10.0, bad, low_open=True),
        "presence_penalty": _number(s, "presence_penalty", defaults.presence_penalty,
                                    -2.0, 2.0, bad),
        "frequency_penalty": _number(s, "frequency_penalty", defaults.frequency_penalty,
                                     -2.0, 2.0, bad),
    }
    top_k = s.top_k if given("top_k") else defaults.top_k
    n = s.n if given("n") else defaults.num_samples
    if not 1 <= n <= limits.max_batch_size:
        bad.append(("sampling.n", f"must be in [1, {limits.max_batch_size}] (the model's batch "
                                  f"size), got {n}"))
    elif max_tokens == 0 and n != 1:
        bad.append(("sampling.n", "must be 1 when max_tokens is 0 (the prompt is scored once)"))
    seed = s.seed if given("seed") else defaults.seed
    if seed is not None and seed >= SEED_MODULUS:
        bad.append(("sampling.seed", f"must be below 2^63, got {seed}"))
    stop = _stop_sequences(list(s.stop), bad)
    logprobs = s.logprobs if given("logprobs") else defaults.logprobs
    top_logprobs = s.top_logprobs if given("top_logprobs") else 0
    if top_logprobs > MAX_TOP_LOGPROBS:
        bad.append(("sampling.top_logprobs", f"must be in [0, {MAX_TOP_LOGPROBS}], got "
                                             f"{top_logprobs}"))
    elif top_logprobs and not logprobs:
        bad.append(("sampling.top_logprobs", "needs sampling.logprobs = true"))
    if bad:
        raise InvalidArgumentError(bad)
    try:
        config = defaults.replace(
            max_new_tokens=max(1, max_tokens), top_k=top_k, num_samples=n, seed=None,
            stop_sequences=stop, stream=False, **knobs,
            logprobs=logprobs, top_logprobs=top_logprobs,
            stop_at_eos=s.stop_at_eos if given("stop_at_eos") else defaults.stop_at_eos)
    except ConfigError as exc:  # a range this module does not check; still the client's input
        raise InvalidArgumentError([("sampling", str(exc))]) from exc
    return GenerationRequest(request_id=request_id, model=limits.name, prompt_ids=prompt_ids,
                             config=config, max_tokens=max_tokens, n=n,
                             seed=random_seed() if seed is None else seed,
                             score_prompt=score_prompt)


def _request_id(value: str, bad: list[FieldViolation]) -> str:
    if not value:
        return uuid.uuid4().hex
    if len(value) > MAX_REQUEST_ID_LENGTH or not value.isprintable():
        bad.append(("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} printable "
                                  "characters"))
    return value


def _prompt_ids(prompt: str, token_ids: list[int], limits: ModelLimits,
                bad: list[FieldViolation]) -> list[int]:
    """The prompt's token ids, from its text or as given (`prompt_token_ids`)."""
    field = "prompt_token_ids" if token_ids else "prompt"
    if prompt and token_ids:
        bad.append(("prompt_token_ids", "give prompt or prompt_token_ids, not both"))
        return []
    if not prompt and not token_ids:
        bad.append(("prompt", "must not be empty"))
        return []
    if token_ids:
        vocab = limits.tokenizer.vocab_size
        outside = [i for i in token_ids if i >= vocab]
        if outside:
            bad.append(("prompt_token_ids", f"ids must be below {vocab} (the vocabulary of "
                                            f"model {limits.name!r}), got {outside[0]}"))
        ids = token_ids
    else:
        ids = limits.tokenizer.encode(prompt)
    if len(ids) > limits.max_prompt_tokens:
        bad.append((field, f"is {len(ids)} tokens; model {limits.name!r} accepts at most "
                           f"{limits.max_prompt_tokens} (its context is {limits.block_size})"))
    return ids


def _number(s: generate_pb2.SamplingParams, name: str, default: float, low: float, high: float,
            bad: list[FieldViolation], *, low_open: bool = False) -> float:
    """A float knob: its value if sent and in range, else the default (and a violation)."""
    if not s.HasField(name):  # type: ignore[arg-type]
        return default
    value = float(getattr(s, name))
    above_low = value > low if low_open else value >= low
    if math.isnan(value) or not above_low or value > high:
        left = "(" if low_open else "["
        bad.append((f"sampling.{name}", f"must be in {left}{low:g}, {high:g}], got {value:g}"))
        return default
    return value


def _stop_sequences(stop: list[str], bad: list[FieldViolation]) -> list[str]:
    if len(stop) > MAX_STOP_SEQUENCES:
        bad.append(("sampling.stop", f"at most {MAX_STOP_SEQUENCES} stop sequences, got "
                                     f"{len(stop)}"))
    for i, text in enumerate(stop):
        if not text:
            bad.append((f"sampling.stop[{i}]", "must not be empty"))
        elif len(text) > MAX_STOP_LENGTH:
            bad.append((f"sampling.stop[{i}]", f"must be at most {MAX_STOP_LENGTH} characters, "
                                               f"got {len(text)}"))
    return stop


def validate_token_ids(ids: Sequence[int], tokenizer: Tokenizer) -> list[int]:
    """Ids for Detokenize: each must be a token of the tokenizer."""
    bad = [(f"token_ids[{i}]", f"{t} is not a token id (the vocabulary has "
                               f"{tokenizer.vocab_size})")
           for i, t in enumerate(ids) if t >= tokenizer.vocab_size]
    if bad:
        raise InvalidArgumentError(bad[:10])  # the first few say enough
    return list(ids)


# ----------------------------------------------------------------------------------------------
# model admin


@dataclass
class LoadSpec:
    """A validated LoadModelRequest (the path is checked later, against the model roots)."""

    name: str
    path: str
    device: str | None
    dtype: str | None
    max_batch_size: int | None
    set_default: bool
    job_id: str | None = None  # load a training job's checkpoint instead of `path`


def validate_model_name(name: str, field: str = "name") -> str:
    if not MODEL_NAME.fullmatch(name):
        raise InvalidArgumentError([(field, "must be 1 to 64 characters of letters, digits, '.', "
                                            "'_' and '-', starting with a letter or digit, got "
                                            f"{name!r}")])
    return name


def validate_load(request: model_admin_pb2.LoadModelRequest) -> LoadSpec:
    """LoadModelRequest -> LoadSpec, with every bad field listed."""
    bad: list[FieldViolation] = []
    name: str = request.name
    try:
        validate_model_name(name)
    except InvalidArgumentError as exc:
        bad += exc.field_violations
    path = request.path if request.HasField("path") else ""
    job_id = request.job_id if request.HasField("job_id") else None
    if not path and job_id is None:
        bad.append(("path", "must name a checkpoint folder or file under a model root (or "
                            "give job_id)"))

    device = request.device if request.HasField("device") else None
    dtype = request.dtype if request.HasField("dtype") else None
    batch = request.max_batch_size if request.HasField("max_batch_size") else None
    if device is not None:
        try:
            resolve_device(device)
        except (RuntimeError, ValueError) as exc:
            bad.append(("device", str(exc)))
    if dtype is not None and dtype not in DTYPES:
        bad.append(("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}"))
    if batch is not None and not 1 <= batch <= MAX_BATCH_SIZE:
        bad.append(("max_batch_size", f"must be in [1, {MAX_BATCH_SIZE}], got {batch}"))
    if bad:
        raise InvalidArgumentError(bad)
    return LoadSpec(name=name, path=path, device=device, dtype=dtype, max_batch_size=batch,
                    set_default=request.set_default, job_id=job_id)
