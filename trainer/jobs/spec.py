"""A StartJob spec -> a JobPlan, with every bad field reported at once (SpecError).

    plan = validate_spec(request.spec, limits, rules, checkpoint_of=manager.checkpoint_of)
    preflight(plan, job_dir)          # gpt-train's own checks, before the job folder exists

Checked here, before anything is written: every field's type and range (the ranges declared on
TrainingConfig and ModelConfig), the data source (a path under the data roots, uploaded text
under the size limit, or an http(s) URL whose host is not loopback, private, link-local or a
metadata address), the starting checkpoint (under the model roots, or an earlier job's), ranks
and device. Then `preflight` runs gpt-train's preflight on the resulting configuration (model
shape against the checkpoint, tokenizer against a prepared dataset, ...), so a spec that
validates is one gpt-train accepts. Paths a client names go through the server's one path
policy, handed in as `SpecRules.resolve_path`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanollm.checkpoint import CheckpointError
from nanollm.config import ConfigError, ModelConfig, TrainingConfig, range_text
from nanollm.config_io import build_config
from nanollm.device import resolve_device
from nanollm.text_sources import is_url
from nanollm.url_guard import URLBlockedError, blocked_reason, check_scheme, checked_addresses
from nanollm.v1 import train_pb2
from trainer.jobs.data_checks import SNIFF_BYTES, text_problem
from trainer.jobs.errors import FieldViolation, JobError, SpecError

MAX_NAME = 100
MAX_RANKS = 64
MAX_SEED = 2**63 - 1
# Names of the data files a job keeps in its folder.
UPLOAD_FILE = "upload.txt"
DOWNLOAD_FILE = "download.txt"

# TrainingParams fields that are ModelConfig fields (the rest are TrainingConfig's).
_MODEL_PARAMS = ("dropout",)
_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "tokenizer")
_CONFIG_FIELDS = {cls: {f.name: f for f in dataclasses.fields(cls)}
                  for cls in (TrainingConfig, ModelConfig)}


@dataclass(frozen=True)
class SpecLimits:
    """What the server allows (ServerConfig's jobs settings)."""

    data_roots: list[Path]
    model_roots: list[Path]
    max_upload_bytes: int
    max_download_bytes: int
    allow_private_urls: bool = False


@dataclass(frozen=True)
class SpecRules:
    """The server's rules for names a client gives. `resolve_path(path, roots, what, field)`
    returns the resolved path inside a root or raises SpecError; `model_name_problem(name)` says
    what is wrong with a served model's name (None when it is fine)."""

    resolve_path: Callable[[str, list[Path], str, str], Path]
    model_name_problem: Callable[[str], str | None]


@dataclass
class DataPlan:
    """Where a job's text comes from: kind "path" (`path`), "upload" (`text`) or "url"."""

    kind: str
    path: str | None = None
    text: bytes | None = None
    url: str | None = None
    max_bytes: int = 0

    def data_path(self, job_dir: Path) -> str:
        """The data_path gpt-train reads (uploads and downloads live in the job folder)."""
        if self.kind == "path":
            assert self.path is not None
            return self.path
        return str(job_dir / "data" / (UPLOAD_FILE if self.kind == "upload" else DOWNLOAD_FILE))


@dataclass
class JobPlan:
    """A validated spec: what to run. `train` holds the TrainingConfig fields the spec sets (the
    model's under "model"); the job folder's paths are added by `trainer_config`."""

    spec: train_pb2.JobSpec  # as given, uploaded text left out
    train: dict[str, Any]
    data: DataPlan
    ranks: int
    model_name: str | None  # load the result under this name when it SUCCEEDS

    def trainer_config(self, job_dir: Path) -> dict[str, Any]:
        """The --config file of the job's gpt-train: the spec's settings plus its folders."""
        config = dict(self.train)
        config.update(out_dir=str(job_dir), data_dir=str(job_dir / "data"),
                      data_path=self.data.data_path(job_dir), progress=False)
        return config


def validate_spec(spec: train_pb2.JobSpec, limits: SpecLimits, rules: SpecRules,
                  checkpoint_of: Callable[[str], Path]) -> JobPlan:
    """The JobPlan of `spec`, or SpecError listing every bad field. `checkpoint_of(job_id)`
    gives an earlier job's checkpoint (or raises a JobError saying why there is none)."""
    bad: list[FieldViolation] = []
    if len(spec.name) > MAX_NAME or not spec.name.isprintable():
        bad.append(("spec.name", f"must be at most {MAX_NAME} printable characters"))
    train: dict[str, Any] = {}
    model: dict[str, Any] = {}
    _model_source(spec, limits, rules, checkpoint_of, train, model, bad)
    _training_params(spec.training, train, model, bad)
    data = _data_source(spec.data, limits, rules, train, bad)
    ranks = spec.ranks or 1
    if ranks > MAX_RANKS:
        bad.append(("spec.ranks", f"must be at most {MAX_RANKS}, got {ranks}"))
    device = spec.device or "auto"
    try:
        resolved = resolve_device(device)
        if resolved.type == "cuda" and ranks > 1:
            import torch

            if ranks > torch.cuda.device_count():
                bad.append(("spec.ranks", f"{ranks} ranks need {ranks} GPUs; this machine has "
                                          f"{torch.cuda.device_count()}"))
    except ValueError as exc:
        bad.append(("spec.device", str(exc)))
    train["device"] = device
    accumulation = train.get("gradient_accumulation_steps", 1)
    if 1 < ranks <= MAX_RANKS and accumulation % ranks:
        bad.append(("spec.training.gradient_accumulation_steps",
                    f"is global and must be divisible by the number of ranks ({ranks}), got "
                    f"{accumulation}"))
    model_name = None
    if spec.load_when_done:
        model_name = spec.model_name  # empty: the job id, filled in when the job is made
        problem = rules.model_name_problem(model_name) if model_name else None
        if problem is not None:
            bad.append(("spec.model_name", problem))
    elif spec.model_name:
        bad.append(("spec.model_name", "is only used with load_when_done"))
    if bad:
        raise SpecError(bad)
    if model:
        train["model"] = model
    kept = train_pb2.JobSpec()
    kept.CopyFrom(spec)
    kept.data.ClearField("text")
    return JobPlan(spec=kept, train=train, data=data, ranks=ranks, model_name=model_name)


def preflight(plan: JobPlan, job_dir: Path) -> None:
    """gpt-train's own checks of the job's configuration (the job folder need not exist yet);
    SpecError names the field a failed check is about."""
    from trainer.preflight import check_config  # imports torch and the trainer

    config = plan.trainer_config(job_dir)
    if plan.data.kind != "path":
        # Uploads and downloads appear in the job folder only later; as a URL, preflight checks
        # the rest (tokenizer, vocabulary) as for any raw text without fetching anything.
        config["data_path"] = plan.data.url or "https://upload.invalid/upload.txt"
    try:
        cfg = build_config(TrainingConfig, None, config)
        check_config(cfg, set(config.get("model", {})))
    except ConfigError as exc:
        raise SpecError([(_field_of(str(exc), plan.spec), str(exc))]) from None
    except CheckpointError as exc:  # the starting checkpoint's files (config.json) are bad
        which = plan.spec.WhichOneof("model") or "model"
        text = str(exc)
        start = str(config.get("init_from", ""))
        if which == "checkpoint_path" and start:  # as the client named it, not the server path
            text = text.replace(start, plan.spec.checkpoint_path)
        raise SpecError([(f"spec.{which}", text)]) from None


# ----------------------------------------------------------------------------------------------
# the parts of a spec


def _model_source(spec: train_pb2.JobSpec, limits: SpecLimits, rules: SpecRules,
                  checkpoint_of: Callable[[str], Path], train: dict[str, Any],
                  model: dict[str, Any], bad: list[FieldViolation]) -> None:
    which = spec.WhichOneof("model")
    if which is None:
        bad.append(("spec.model", "give scratch (a model shape), checkpoint_path or "
                                  "from_job_id"))
    elif which == "scratch":
        train["init_from"] = "scratch"
        _shape(spec.scratch, model, bad)
    elif which == "checkpoint_path":
        try:
            path = rules.resolve_path(spec.checkpoint_path, limits.model_roots, "model",
                                      "spec.checkpoint_path")
            train["init_from"] = str(path)
        except SpecError as exc:
            bad += exc.field_violations
    else:
        try:
            train["init_from"] = str(checkpoint_of(spec.from_job_id))
        except SpecError as exc:  # a malformed id
            bad += [("spec.from_job_id", why) for _, why in exc.field_violations]
        except JobError as exc:
            bad.append(("spec.from_job_id", exc.message))


def _shape(shape: train_pb2.ModelShape, model: dict[str, Any], bad: list[FieldViolation]
           ) -> None:
    before = len(bad)
    if shape.preset:
        if shape.preset not in ModelConfig.PRESETS:
            bad.append(("spec.scratch.preset", f"must be one of "
                                               f"{', '.join(ModelConfig.PRESETS)}, got "
                                               f"{shape.preset!r}"))
        else:
            model.update(ModelConfig.PRESETS[shape.preset])
    for name in _SHAPE_FIELDS:
        if shape.HasField(name):  # type: ignore[arg-type]
            value = getattr(shape, name)
            if _in_range(ModelConfig, name, value, f"spec.scratch.{name}", bad):
                model[name] = value
    if len(bad) == before and model:
        try:
            ModelConfig(**model)  # fields that only fail together (n_embd % n_head)
        except ConfigError as exc:
            bad.append((_field_of(str(exc)), str(exc)))


def _training_params(params: train_pb2.TrainingParams, train: dict[str, Any],
                     model: dict[str, Any], bad: list[FieldViolation]) -> None:
    for descriptor in params.DESCRIPTOR.fields:
        name = descriptor.name
        if not params.HasField(name):  # type: ignore[arg-type]
            continue
        value = getattr(params, name)
        field = f"spec.training.{name}"
        cls = ModelConfig if name in _MODEL_PARAMS else TrainingConfig
        if name == "max_iters" and value < 1:
            bad.append((field, "must be >= 1"))
        elif name == "seed" and value > MAX_SEED:
            bad.append((field, f"must be at most 2^63 - 1, got {value}"))
        elif _in_range(cls, name, value, field, bad):
            (model if cls is ModelConfig else train)[name] = value
    given = dict(train)
    if "min_lr" in given or "learning_rate" in given:
        try:
            TrainingConfig(**{k: v for k, v in given.items()
                              if k in ("learning_rate", "min_lr")})
        except ConfigError as exc:
            bad.append(("spec.training.min_lr", str(exc)))


def _in_range(cls: type, name: str, value: Any, field: str, bad: list[FieldViolation]) -> bool:
    """Whether `value` fits the range and choices declared on cls's field `name`."""
    meta = _CONFIG_FIELDS[cls][name].metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        bad.append((field, f"must be one of {', '.join(map(str, meta['choices']))}, got "
                           f"{value!r}"))
        return False
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, bool) or (lo is None and hi is None):
        return True
    if isinstance(value, float) and math.isinf(value):
        # A config range may be open-ended ([0.0, inf]), but the job's files are strict JSON
        # and no setting means anything at infinity.
        bad.append((field, f"must be a finite number in {range_text(dict(meta))}, got {value!r}"))
        return False
    low = lo is not None and (value <= lo if meta["min_exclusive"] else value < lo)
    high = hi is not None and (value >= hi if meta["max_exclusive"] else value > hi)
    if (isinstance(value, float) and math.isnan(value)) or low or high:
        bad.append((field, f"must be in {range_text(dict(meta))}, got {value!r}"))
        return False
    return True


def _data_source(data: train_pb2.DataSource, limits: SpecLimits, rules: SpecRules,
                 train: dict[str, Any], bad: list[FieldViolation]) -> DataPlan:
    if data.HasField("train_val_split") and _in_range(
            TrainingConfig, "train_val_split", data.train_val_split,
            "spec.data.train_val_split", bad):
        train["train_val_split"] = data.train_val_split
    max_bytes = limits.max_download_bytes
    if data.HasField("max_download_bytes"):
        if not 1 <= data.max_download_bytes <= limits.max_download_bytes:
            bad.append(("spec.data.max_download_bytes", f"must be in [1, "
                                                        f"{limits.max_download_bytes}] (the "
                                                        "server's limit)"))
        max_bytes = data.max_download_bytes
    which = data.WhichOneof("source")
    if which == "path":
        try:
            path = rules.resolve_path(data.path, limits.data_roots, "dataset",
                                      "spec.data.path")
            problem = text_problem(path, data.path)
            if problem is not None:
                bad.append(("spec.data.path", problem))
            return DataPlan("path", path=str(path))
        except SpecError as exc:
            bad += exc.field_violations
    elif which == "text":
        _check_upload(data.text, limits.max_upload_bytes, bad)
        return DataPlan("upload", text=data.text)
    elif which == "url":
        _check_url(data.url, limits.allow_private_urls, bad)
        return DataPlan("url", url=data.url, max_bytes=max_bytes)
    else:
        bad.append(("spec.data", "give the training text: path (under a data root), text "
                                 "(uploaded) or url"))
    return DataPlan("path")


def _check_upload(text: bytes, limit: int, bad: list[FieldViolation]) -> None:
    if not text:
        bad.append(("spec.data.text", "must not be empty"))
    elif len(text) > limit:
        bad.append(("spec.data.text", f"is {len(text)} bytes; the server accepts at most "
                                      f"{limit}"))
    else:
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(("spec.data.text", f"is not UTF-8 text ({exc.reason} at byte "
                                          f"{exc.start})"))
            return
        if "\x00" in decoded[:SNIFF_BYTES]:  # as gpt-train would refuse it, in the job
            bad.append(("spec.data.text", "looks like a binary file (NUL bytes in its first "
                                          "8 KiB); send UTF-8 text"))
        elif decoded.isspace():
            bad.append(("spec.data.text", f"holds only whitespace ({len(text)} bytes); nothing "
                                          "to train on"))


def _check_url(url: str, allow_private: bool, bad: list[FieldViolation]) -> None:
    """The scheme, and the host's addresses now (the job checks every connection again)."""
    field = "spec.data.url"
    try:
        check_scheme(url)
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except (URLBlockedError, ValueError) as exc:
        bad.append((field, str(exc)))
        return
    if not is_url(url) or not host:
        bad.append((field, f"{url!r} is not an http:// or https:// URL with a host"))
        return
    if allow_private:
        return
    try:
        checked_addresses(host, port or (443 if parts.scheme == "https" else 80),
                          blocked_reason)
    except URLBlockedError as exc:
        bad.append((field, f"refused: {exc}; this server does not download from loopback, "
                           "private, link-local or cloud metadata addresses"))
    except (socket.gaierror, UnicodeError) as exc:
        bad.append((field, f"the host {host!r} cannot be resolved ({exc})"))


# ----------------------------------------------------------------------------------------------
# which field a gpt-train message is about

_QUALIFIED = re.compile(r"\b(TrainingConfig|ModelConfig)\.(\w+)")
_LEADING = re.compile(r"^(data_path|data_dir|out_dir|init_from)\b")


def _field_of(message: str, spec: train_pb2.JobSpec | None = None) -> str:
    """The request field a ConfigError message names ("spec" when it names none)."""
    match = _QUALIFIED.search(message)
    name = match.group(2) if match else None
    if name is None:
        lead = _LEADING.match(message)
        name = lead.group(1) if lead else None
    if name in ("data_path", "vocab_size"):
        return "spec.data"
    if name == "train_val_split":
        return "spec.data.train_val_split"
    if name == "device":
        return "spec.device"
    if name == "init_from":
        which = spec.WhichOneof("model") if spec is not None else None
        return f"spec.{which}" if which else "spec.model"
    if name in _SHAPE_FIELDS:
        if name == "tokenizer" and spec is not None and spec.WhichOneof("model") != "scratch":
            return "spec.data"
        return f"spec.scratch.{name}"
    if name is not None and name in train_pb2.TrainingParams.DESCRIPTOR.fields_by_name:
        return f"spec.training.{name}"
    return "spec"
