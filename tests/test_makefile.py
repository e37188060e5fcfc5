"""`make generate` passes PROMPT to gpt-generate exactly as typed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "gpt-generate").exists(),
    reason="needs make and the project's .venv")


PROMPT = """He said "hi", it's $HOME, $(HOME) and `date`; a\\nb"""


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_make_generate_keeps_the_prompt_verbatim(via: str) -> None:
    prompt = PROMPT
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # -o: treat the install stamp as up to date, so make never reinstalls the venv here.
    cmd = ["make", "-s", "-o", ".venv/.installed", "generate", "MAX_TOKENS=1"]
    if via == "argument":
        cmd.append(f"PROMPT={prompt}")
    else:
        env["PROMPT"] = prompt
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(prompt)  # echoed before the one generated token
