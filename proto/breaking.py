"""Fail when the contracts break clients of the previous commit (`make buf-breaking`).

    python proto/breaking.py --buf .tools/node_modules/.bin/buf [--against REF]

The contracts (buf.yaml, proto/, third_party/) of the previous commit are extracted with
`git archive` and compared with the working tree by `buf breaking` (rules: buf.yaml's FILE set).
The previous commit is REF when given; otherwise HEAD while the contracts have uncommitted
changes (checking an edit before committing it), and HEAD~1 when they are committed (CI checks
the commit it runs on). There is nothing to break, so the check passes with a note, when that
commit has no proto/ yet or there is no earlier commit. In a shallow clone the missing commit is
fetched (`git fetch --deepen=1`); when that fails, the check fails and says so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTRACT_PATHS = ("buf.yaml", "proto", "third_party")


class CheckError(RuntimeError):
    """The check could not run (not a git repository, unknown ref, buf missing)."""


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def has_commit(root: Path, ref: str) -> bool:
    return git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode == 0


def contracts_dirty(root: Path) -> bool:
    """Uncommitted (or untracked) changes under the contract paths."""
    status = git(root, "status", "--porcelain", "--", *CONTRACT_PATHS)
    return bool(status.stdout.strip())


def choose_ref(root: Path, against: str | None) -> str | None:
    """The commit to compare with, or None when there is no earlier commit at all."""
    if git(root, "rev-parse", "--is-inside-work-tree").returncode != 0:
        raise CheckError(f"{root} is not a git work tree")
    if against is not None:
        if not has_commit(root, against):
            raise CheckError(f"unknown git ref {against!r}")
        return against
    if not has_commit(root, "HEAD"):
        return None
    if contracts_dirty(root):
        return "HEAD"
    if has_commit(root, "HEAD~1"):
        return "HEAD~1"
    if git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        git(root, "fetch", "--quiet", "--deepen=1")
        if has_commit(root, "HEAD~1"):
            return "HEAD~1"
        raise CheckError("HEAD~1 is not in this shallow clone and `git fetch --deepen=1` failed; "
                         "clone with --depth=2 or more")
    return None


def extract(root: Path, ref: str, dest: Path) -> bool:
    """Write ref's contract files into dest; False when ref has no buf.yaml or proto/."""
    present = [p for p in CONTRACT_PATHS
               if git(root, "cat-file", "-e", f"{ref}:{p}").returncode == 0]
    if "buf.yaml" not in present or "proto" not in present:
        return False
    archive = git(root, "archive", "--format=tar", f"--output={dest / 'contracts.tar'}", ref, "--",
                  *present)
    if archive.returncode != 0:
        raise CheckError(f"git archive {ref} failed: {archive.stderr.strip()}")
    # tar, not tarfile: tarfile's safe extraction filter is missing from early Python 3.10s.
    subprocess.run(["tar", "-xf", "contracts.tar"], cwd=dest, check=True)
    (dest / "contracts.tar").unlink()
    return True


def run_breaking(root: Path, buf: str, ref: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if not extract(root, ref, Path(tmp)):
            print(f"buf breaking: {ref} has no contracts yet, nothing to break")
            return 0
        try:
            result = subprocess.run([buf, "breaking", "--against", tmp], cwd=root)
        except FileNotFoundError as error:
            raise CheckError(f"buf not found at {buf}: run make buf-install") from error
    if result.returncode == 0:
        print(f"buf breaking: no breaking change against {ref}")
        return 0
    print(f"buf breaking: the contracts break clients of {ref} (see above); keep the old fields "
          "and add new ones instead", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buf", default=str(REPO / ".tools/node_modules/.bin/buf"),
                        help="the buf executable (make buf-install puts it in .tools/)")
    parser.add_argument("--against", help="git ref to compare with (default: see above)")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        ref = choose_ref(root, args.against)
        if ref is None:
            print("buf breaking: no earlier commit, nothing to break")
            return 0
        return run_breaking(root, args.buf, ref)
    except CheckError as error:
        print(f"buf breaking: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
