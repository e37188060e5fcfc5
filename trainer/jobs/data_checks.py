"""What StartJob can tell about raw training text under a data root before any job exists.

    problem = text_problem(resolved_path, "books/")    # None, or why gpt-train would refuse it

gpt-train prepares raw text inside the job's process, long after StartJob returned; a folder
without text files, a link leading out of the folder, an empty file or a binary file would only
fail the job there. These checks are the cheap ones (file names and sizes, the first 8 KiB of a
single file), so a spec that names such a source is INVALID_ARGUMENT with nothing created.
Prepared dataset folders are preflight's (trainer/preflight.py).
"""

from __future__ import annotations

from pathlib import Path

from nanollm.dataset import DataError, is_dataset_dir
from nanollm.text_sources import list_documents

SNIFF_BYTES = 8192  # gpt-train's own binary check looks at as much


def text_problem(path: Path, given: str) -> str | None:
    """Why gpt-train would refuse the raw text at `path` (named `given` by the client), else
    None. Messages name the path as the client gave it, not the server's resolved path."""
    try:
        if is_dataset_dir(path):
            return None
        docs = list_documents(path)
        if sum(doc.stat().st_size for doc in docs) == 0:
            return f"{given}: is empty (0 bytes of text); nothing to train on"
        if path.is_file():
            with open(path, "rb") as f:
                if b"\x00" in f.read(SNIFF_BYTES):
                    return (f"{given}: looks like a binary file (NUL bytes in its first 8 KiB); "
                            "pass UTF-8 text")
    except DataError as exc:
        return str(exc).replace(str(path), given)
    except OSError as exc:
        return f"{given}: cannot be read ({exc.strerror or exc})"
    return None
