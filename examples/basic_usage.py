"""`python examples/basic_usage.py`, the example nanoLLM_gpt's README runs, under its old name:
it runs python_api.py (the same flags, the same output), which shows that library tour with
this project's names. docs/migration.md maps the rest of that README.

    python examples/basic_usage.py                       # = python examples/python_api.py
    python examples/basic_usage.py --help                # python_api.py's flags
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("python_api.py")), run_name="__main__")
