"""docs/handbook.md stays true: its configuration reference has one row per field of
ServerConfig, TrainingConfig, ModelConfig and GenerationConfig, with the flag the real command
line parser defines, the dataclass default and the declared range; and every relative link in
README.md and docs/*.md points to a file (and heading) that exists.

A field added, renamed or re-defaulted without its row fails here, and the message shows the
row to paste: `.venv/bin/python -m pytest -q tests/test_handbook.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from nanollm.config import (
    BaseConfig,
    GenerationConfig,
    ModelConfig,
    TrainingConfig,
    range_text,
)
from nanollm.generate_cli import build_parser as generate_parser
from nanollm.server_config import ServerConfig
from server.cli import build_parser as server_parser
from trainer.cli import build_parser as train_parser

ROOT = Path(__file__).resolve().parent.parent
HANDBOOK = ROOT / "docs" / "handbook.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_FLAG = "none"

# (section heading in the handbook, dataclass, the parser of the command that takes its flags,
#  the prefix of the parser's dest for the class's fields)
SECTIONS: list[tuple[str, type[BaseConfig], argparse.ArgumentParser, str]] = [
    ("ServerConfig", ServerConfig, server_parser(), ""),
    ("TrainingConfig", TrainingConfig, train_parser(), ""),
    ("ModelConfig", ModelConfig, train_parser(), "model."),
    ("GenerationConfig", GenerationConfig, generate_parser(), ""),
]


def flags(parser: argparse.ArgumentParser, dest: str) -> str:
    """The flag the parser defines for a field (a boolean's `--no-` form left out), as the
    handbook shows it."""
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return f"`{action.option_strings[0]}`"
    return NO_FLAG


def shown_default(f: dataclasses.Field[Any]) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value}`"
    return f"`{value}`"


def shown_range(meta: Any) -> str:
    if meta.get("choices"):
        return ", ".join(f"`{c}`" for c in meta["choices"])
    if meta.get("min") is not None or meta.get("max") is not None:
        return f"`{range_text(dict(meta))}`"
    return ""


def expected_rows(cls: type[BaseConfig], parser: argparse.ArgumentParser, prefix: str
                  ) -> dict[str, tuple[str, str, str]]:
    """field -> (flags, default, range) as the handbook's table must show them."""
    rows = {}
    for f in dataclasses.fields(cls):
        if f.name in getattr(cls, "NESTED", {}):
            continue  # TrainingConfig.model is ModelConfig's own table
        rows[f.name] = (flags(parser, prefix + f.name), shown_default(f), shown_range(f.metadata))
    return rows


def handbook_rows(heading: str) -> dict[str, tuple[str, str, str]]:
    """field -> (flags, default, range) from the table under `### <heading>`."""
    text = HANDBOOK.read_text(encoding="utf-8")
    match = re.search(rf"^### `?{heading}`?.*?\n(.*?)(?=^#)", text, re.S | re.M)
    assert match, f"docs/handbook.md has no `### {heading}` section"
    rows = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], cells[2], cells[3])
    return rows


@pytest.mark.parametrize(("heading", "cls", "parser", "prefix"), SECTIONS,
                         ids=[s[0] for s in SECTIONS])
def test_configuration_reference_matches_the_dataclasses(
        heading: str, cls: type[BaseConfig], parser: argparse.ArgumentParser, prefix: str) -> None:
    expected = expected_rows(cls, parser, prefix)
    shown = handbook_rows(heading)
    missing = [f"| `{name}` | {' | '.join(row)} | <what it does> |"
               for name, row in expected.items() if name not in shown]
    assert not missing, f"add to the {heading} table of docs/handbook.md:\n" + "\n".join(missing)
    assert sorted(set(shown) - set(expected)) == [], f"{heading} has no such fields"
    for name, row in expected.items():
        assert shown[name] == row, f"{heading}.{name}: the handbook says {shown[name]}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(ROOT).as_posix() for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", doc.read_text("utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor[1:] not in _anchors(path):
            broken.append(target + anchor)
    assert broken == [], f"{doc.name}: links to nothing: {broken}"
