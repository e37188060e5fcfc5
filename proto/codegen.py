"""Generate the Python code of the protobuf contracts, or check that the committed code is fresh.

    python proto/codegen.py            # `make proto`: rewrite nanollm/v1 and build/nanollm.pb
    python proto/codegen.py --check    # `make proto-check`: exit 1 when nanollm/v1 is stale

Every `.proto` under proto/ is compiled with the protoc of grpcio-tools into `*_pb2.py`,
`*_pb2.pyi` and `*_pb2_grpc.py` next to where its package path points (proto/nanollm/v1/x.proto
-> nanollm/v1/x_pb2.py), so the modules import as `from nanollm.v1 import generate_pb2` with no
patching. google/api protos are only imported: their Python code comes from the
googleapis-common-protos package. `make proto` also writes a descriptor set with all imports
and the google.rpc error types, build/nanollm.pb, which Envoy's gRPC-JSON transcoder reads.
Next to the code it writes nanollm/v1/source_info.binpb, the same protos with their comments
(`--include_source_info`): server reflection serves them, so `grpcurl describe` shows the
documentation of every service, method, message and field.

The check generates into a temporary folder and compares byte for byte, so it needs the pinned
grpcio-tools (constraints.txt): another protoc version writes different code.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "source_info.binpb")
# Our .proto files with their comments, for reflection (server/reflection.py reads it).
SOURCE_INFO = Path("nanollm/v1/source_info.binpb")
DESCRIPTOR_SET = Path("build/nanollm.pb")
# Added to the descriptor set only: the google.rpc error types (their Python code is a package).
ERROR_DETAIL_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")
PACKAGE_DOC = '"""Code generated from proto/ by `make proto`; do not edit."""\n'


def googleapis_common_root() -> Path:
    """The folder holding google/rpc/*.proto of the googleapis-common-protos package."""
    from google.rpc import status_pb2

    return Path(status_pb2.__file__).resolve().parents[2]


class ProtocError(RuntimeError):
    """protoc rejected the protos (its diagnostics, one per line, are the message)."""


def proto_files(root: Path) -> list[Path]:
    """Every .proto of our module, relative to proto/, in a stable order."""
    return sorted(p.relative_to(root / "proto") for p in (root / "proto").rglob("*.proto"))


def run_protoc(root: Path, out_dir: Path, descriptor_set: Path | None = None) -> None:
    """Compile every proto under root/proto into out_dir (and a descriptor set when asked)."""
    files = proto_files(root)
    if not files:
        raise ProtocError(f"no .proto files under {root / 'proto'}")
    args = [
        sys.executable, "-m", "grpc_tools.protoc",
        "-Iproto", "-Ithird_party/googleapis",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
    ]
    if descriptor_set is None:  # the code generation run: also our comments, for reflection
        (out_dir / SOURCE_INFO).parent.mkdir(parents=True, exist_ok=True)
        args += ["--include_source_info", f"--descriptor_set_out={out_dir / SOURCE_INFO}"]
    else:
        descriptor_set.parent.mkdir(parents=True, exist_ok=True)
        args += ["--include_imports", f"--descriptor_set_out={descriptor_set}",
                 f"-I{googleapis_common_root()}"]
        # Envoy turns an error's google.rpc.Status into a JSON body only when the set holds
        # the types of its details (BadRequest, RetryInfo).
        files = [*files, *map(Path, ERROR_DETAIL_PROTOS)]
    # protoc names generated files after the paths it is given, so pass them relative to -I;
    # running in root makes its diagnostics name proto/... paths.
    result = subprocess.run([*args, *map(str, files)], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProtocError((result.stderr.strip() or result.stdout.strip()).replace("\n", "; "))


def generated_files(root: Path, packages: set[str]) -> dict[str, bytes]:
    """Generated modules under root's top-level `packages`, by path relative to root."""
    found: dict[str, bytes] = {}
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def top_packages(root: Path) -> set[str]:
    """Top-level folders under proto/ (our proto packages start there: nanollm/...)."""
    return {p.parts[0] for p in proto_files(root) if len(p.parts) > 1}


def differences(committed: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """One line per generated file that is changed, missing or no longer generated."""
    lines = []
    for name in sorted(committed.keys() | fresh.keys()):
        if name not in committed:
            lines.append(f"missing: {name}")
        elif name not in fresh:
            lines.append(f"not generated by any .proto: {name}")
        elif committed[name] != fresh[name]:
            lines.append(f"changed: {name}")
    return lines


def fresh_code(root: Path) -> dict[str, bytes]:
    """What `make proto` would write now, by path relative to root."""
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(root, Path(tmp))
        return generated_files(Path(tmp), top_packages(root))


def stale_files(root: Path = REPO) -> list[str]:
    """Differences between the committed generated code and a fresh generation; [] if fresh."""
    return differences(generated_files(root, top_packages(root)), fresh_code(root))


def write(root: Path = REPO) -> list[str]:
    """Bring the generated code up to date (and rewrite the descriptor set); returns what changed.

    Generates into a temporary folder first, so a protoc error leaves the tree untouched, and
    deletes modules whose .proto is gone.
    """
    fresh = fresh_code(root)
    committed = generated_files(root, top_packages(root))
    changes = []
    for name in sorted(committed.keys() | fresh.keys()):
        target = root / name
        if name not in fresh:
            target.unlink()
            changes.append(f"removed {name}")
        elif committed.get(name) != fresh[name]:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fresh[name])
            changes.append(f"wrote {name}")
    for package_dir in {(root / name).parent for name in fresh}:
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text(PACKAGE_DOC)
    with tempfile.TemporaryDirectory() as tmp:
        run_protoc(root, Path(tmp), descriptor_set=root / DESCRIPTOR_SET)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare the committed code with a fresh generation")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="repository root holding proto/, third_party/ and the generated code")
    args = parser.parse_args(argv)
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        print("grpcio-tools is not installed: run make install", file=sys.stderr)
        return 2
    root = args.root.resolve()
    try:
        return check(root) if args.check else regenerate(root)
    except ProtocError as error:
        print(f"protoc failed: {error}", file=sys.stderr)
        return 2


def check(root: Path) -> int:
    """`make proto-check`: 0 when the generated code is fresh, 1 (and why) when it is stale."""
    stale = stale_files(root)
    if stale:
        print("generated code is stale (" + "; ".join(stale) + "): run make proto",
              file=sys.stderr)
        return 1
    print(f"generated code is up to date with {len(proto_files(root))} .proto files")
    return 0


def regenerate(root: Path) -> int:
    """`make proto`: rewrite the generated code and the descriptor set, listing what changed."""
    changes = write(root)
    print("\n".join(changes) if changes else "generated code was already up to date")
    print(f"descriptor set: {DESCRIPTOR_SET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
