"""Config files and CLI flags for the config dataclasses.

Precedence: dataclass defaults < YAML/JSON file < flags that are actually given. Flags are added
with `default=argparse.SUPPRESS`, so a flag the user did not type never reaches the namespace and
can never overwrite a value from the file.

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_config_flags(parser, TrainingConfig)
    args = parser.parse_args()
    cfg = build_config(TrainingConfig, args.config, flag_overrides(args, TrainingConfig))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nanollm.config import BaseConfig, ConfigError, range_text

C = TypeVar("C", bound=BaseConfig)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a .yaml/.yml/.json file into a dict, with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a .yaml, .yml or .json file")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = path.suffix.lstrip(".")
        raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: nested mappings (e.g. `model:`) merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def build_config(
    cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> C:
    """File values, then explicit overrides, validated once at the end."""
    data = read_config_file(path) if path else {}
    try:
        for key, value in data.items():
            cls.check_section(key, value)  # before flags merge over it
        return cls.from_dict(merge_dicts(data, overrides or {}))
    except ConfigError as exc:
        where = f" (from {path})" if path else ""
        raise ConfigError(f"{exc}{where}") from exc


# ----------------------------------------------------------------------------------------------
# argparse


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> Any:
    """int | None -> int; list[str] -> list[str]; bool stays bool."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0])
    return annotation


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[BaseConfig],
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
) -> None:
    """Add one flag per field; help shows the field's default and allowed range.

    `prefix` is the dotted path of a nested config ("model."); `rename` maps field names to
    other flag spellings (e.g. {"max_new_tokens": "max_tokens"}).
    """
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in getattr(cls, "NESTED", {}):
            continue
        meta = f.metadata
        typ = _scalar_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = meta.get("help", "")
        if meta.get("min") is not None or meta.get("max") is not None:
            help_text += f"; range {range_text(dict(meta))}"
        if "(default:" not in help_text:  # a help text that explains its own default keeps it
            help_text += f" (default: {default!r})"
        kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS,
                                      help=help_text)
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is list:
            kwargs.update(action="append", type=str, metavar="TEXT")
        else:
            kwargs["type"] = typ
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        parser.add_argument(_flag(rename.get(f.name, f.name)), **kwargs)


def flag_overrides(args: argparse.Namespace, cls: type[BaseConfig]) -> dict[str, Any]:
    """The flags the user actually gave, as a nested dict ready for build_config."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        head, _, rest = dest.partition(".")
        if head not in names:
            continue
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out
