"""The one rule for paths a client names: they must lie inside a configured root.

    resolve_under("gpt2-small", [Path("models")], what="model")      # -> models/gpt2-small
    resolve_under("../etc/passwd", roots, what="model")              # InvalidArgumentError

A relative path is looked up under each root in order; an absolute one must already be inside a
root. Symlinks are resolved first, so a link inside a root that points outside it is refused
like the path it points to. Model loads go through here (and training data and output folders
will). The server's own startup model, given by the operator on the command line, does not.
"""

from __future__ import annotations

from pathlib import Path

from server.errors import InvalidArgumentError, NotFoundError


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_under(path: str, roots: list[Path], what: str, field: str = "path") -> Path:
    """The resolved absolute path, or InvalidArgumentError (outside every root, malformed) /
    NotFoundError (inside a root but nothing there). `what` names the thing in messages."""
    if not path:
        raise InvalidArgumentError([(field, f"the {what} path must not be empty")])
    if "\x00" in path:
        raise InvalidArgumentError([(field, f"the {what} path contains a NUL character")])
    if not roots:
        raise InvalidArgumentError([(field, f"the server has no {what} roots configured, so it "
                                            f"loads no {what} by path")])
    resolved_roots = [root.expanduser().resolve() for root in roots]
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [root / given for root in resolved_roots]
    escaped = False
    for candidate in candidates:
        resolved = candidate.resolve()  # follows every symlink, also in parent folders
        if not any(_inside(resolved, root) for root in resolved_roots):
            escaped = True
            continue
        if resolved.exists():
            return resolved
    shown = ", ".join(str(r) for r in resolved_roots)
    # Under one root the path leads outside (`..`, a link): that is the answer, even when under
    # another root nothing by that name exists.
    if escaped:
        raise InvalidArgumentError([(field, f"{path!r} is outside the {what} roots ({shown}); "
                                            f"only {what}s under them can be loaded")])
    raise NotFoundError(f"no {what} at {path!r} under the {what} roots ({shown})")


def relative_to_root(path: Path, roots: list[Path]) -> str:
    """How to show a resolved path: relative to the root that holds it."""
    for root in roots:
        root = root.expanduser().resolve()
        if _inside(path, root):
            return str(path.relative_to(root)) or "."
    return str(path)
