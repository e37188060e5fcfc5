"""The protobuf contracts: generated modules, HTTP annotations, comments, staleness and breaking.

buf runs from .tools/ (installed by `make buf-install`, which `make lint` runs first); the buf
tests are skipped when it is missing. protoc comes from grpcio-tools.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from nanollm.v1 import generate_pb2, generate_pb2_grpc, model_admin_pb2, model_admin_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
BUF = REPO / ".tools" / "node_modules" / ".bin" / "buf"
GRPCURL = Path(sys.executable).parent / "grpcurl"
needs_buf = pytest.mark.skipif(not BUF.exists(), reason="buf is not installed: make buf-install")

# (service, method): (streaming response, http verb, path, body)
RPCS = {
    ("GenerateService", "Generate"): (False, "post", "/v1/generate", "*"),
    ("GenerateService", "StreamGenerate"): (True, "post", "/v1/generate:stream", "*"),
    ("GenerateService", "Tokenize"): (False, "post", "/v1/tokenize", "*"),
    ("GenerateService", "Detokenize"): (False, "post", "/v1/detokenize", "*"),
    ("ModelAdminService", "ListModels"): (False, "get", "/v1/admin/models", ""),
    ("ModelAdminService", "GetModel"): (False, "get", "/v1/admin/models/{name}", ""),
    ("ModelAdminService", "LoadModel"): (False, "post", "/v1/admin/models", "*"),
    ("ModelAdminService", "UnloadModel"): (False, "delete", "/v1/admin/models/{name}", ""),
    ("ModelAdminService", "SetDefaultModel"):
        (False, "post", "/v1/admin/models/{name}:setDefault", "*"),
}


def copy_contracts(dest: Path) -> Path:
    """A repository root in dest holding only the contracts and the generated code."""
    skip = shutil.ignore_patterns("__pycache__", "*.py")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "buf.yaml", dest / "buf.yaml")
    shutil.copytree(REPO / "proto", dest / "proto", ignore=skip)
    shutil.copytree(REPO / "third_party", dest / "third_party", ignore=skip)
    shutil.copytree(REPO / "nanollm" / "v1", dest / "nanollm" / "v1",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)


def codegen(root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, REPO / "proto" / "codegen.py", "--root", root, *flags)


# ----------------------------------------------------------------------------------------------
# the generated modules


def test_generated_modules_expose_every_rpc_with_its_http_rule() -> None:
    found = {}
    for module in (generate_pb2, model_admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                found[(service.name, method.name)] = (
                    method.server_streaming, verb, getattr(rule, verb) if verb else "", rule.body)
    assert found == RPCS
    assert generate_pb2_grpc.GenerateServiceStub and model_admin_pb2_grpc.ModelAdminServiceStub


def test_sampling_knobs_are_optional_and_enums_start_unspecified() -> None:
    fields = generate_pb2.SamplingParams.DESCRIPTOR.fields
    assert [f.name for f in fields if not f.has_presence] == ["stop"]
    assert not generate_pb2.SamplingParams().HasField("temperature")
    assert generate_pb2.FinishReason.Name(0) == "FINISH_REASON_UNSPECIFIED"
    assert model_admin_pb2.ModelState.Name(0) == "MODEL_STATE_UNSPECIFIED"
    assert model_admin_pb2.SourceKind.Name(0) == "SOURCE_KIND_UNSPECIFIED"


# ----------------------------------------------------------------------------------------------
# every element documented, read from protoc's source info (independent of buf)

# FileDescriptorProto / DescriptorProto / ... field numbers of the elements that need a comment
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MSG_FIELD, MSG_NESTED, MSG_ENUM, MSG_ONEOF = 2, 3, 4, 8
ENUM_VALUE, SERVICE_METHOD = 2, 2


def elements(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source-info path -> full name of every service, rpc, message, field, oneof, enum, value."""
    found: dict[tuple[int, ...], str] = {}
    pkg = file.package

    def enum(path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        found[path] = f"{scope}.{e.name}"
        for i, v in enumerate(e.value):
            found[(*path, ENUM_VALUE, i)] = f"{scope}.{e.name}.{v.name}"

    def message(path: tuple[int, ...], m: descriptor_pb2.DescriptorProto, scope: str) -> None:
        name = f"{scope}.{m.name}"
        found[path] = name
        for i, f in enumerate(m.field):
            found[(*path, MSG_FIELD, i)] = f"{name}.{f.name}"
        for i, o in enumerate(m.oneof_decl):
            if not o.name.startswith("_"):  # proto3 `optional` makes a synthetic `_x` oneof
                found[(*path, MSG_ONEOF, i)] = f"{name}.{o.name}"
        for i, nested in enumerate(m.nested_type):
            message((*path, MSG_NESTED, i), nested, name)
        for i, e in enumerate(m.enum_type):
            enum((*path, MSG_ENUM, i), e, name)

    for i, m in enumerate(file.message_type):
        message((FILE_MESSAGE, i), m, pkg)
    for i, e in enumerate(file.enum_type):
        enum((FILE_ENUM, i), e, pkg)
    for i, s in enumerate(file.service):
        found[(FILE_SERVICE, i)] = f"{pkg}.{s.name}"
        for j, method in enumerate(s.method):
            found[(FILE_SERVICE, i, SERVICE_METHOD, j)] = f"{pkg}.{s.name}.{method.name}"
    return found


def uncommented(root: Path, tmp: Path) -> list[str]:
    """Full names of elements of root/proto without a leading comment."""
    protos = sorted(p.relative_to(root / "proto") for p in (root / "proto").rglob("*.proto"))
    out = tmp / "with_source_info.pb"
    result = run(sys.executable, "-m", "grpc_tools.protoc", f"-I{root / 'proto'}",
                 f"-I{root / 'third_party' / 'googleapis'}", "--include_source_info",
                 f"--descriptor_set_out={out}", *protos)
    assert result.returncode == 0, result.stderr
    missing = []
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        comments = {tuple(loc.path): loc.leading_comments.strip()
                    for loc in file.source_code_info.location}
        missing += [name for path, name in elements(file).items() if not comments.get(path)]
    return sorted(missing)


def test_every_service_rpc_message_field_and_enum_value_is_commented(tmp_path: Path) -> None:
    assert uncommented(REPO, tmp_path) == []
    root = copy_contracts(tmp_path / "repo")
    v1 = root / "proto" / "nanollm" / "v1"
    edit(v1 / "generate.proto", "  // Tokens in the prompt (counted once, whatever n is).\n", "")
    edit(v1 / "model_admin.proto", "  // Serving requests.\n", "")
    edit(v1 / "model_admin.proto", "  // Describes one model.\n", "")
    assert uncommented(root, tmp_path) == [
        "nanollm.v1.ModelAdminService.GetModel",
        "nanollm.v1.ModelState.MODEL_STATE_READY",
        "nanollm.v1.Usage.prompt_tokens",
    ]


# ----------------------------------------------------------------------------------------------
# make proto / make proto-check


def test_committed_code_is_fresh_and_make_proto_output_is_usable(tmp_path: Path) -> None:
    result = codegen(REPO, "--check")
    assert (result.returncode, result.stdout) == (0, "generated code is up to date with 3 .proto "
                                                     "files\n")
    root = copy_contracts(tmp_path)
    result = codegen(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("generated code was already up to date\n"
                             "descriptor set: build/nanollm.pb\n")
    # The descriptor set (with google/api imports) is what Envoy and grpcurl -protoset read.
    listed = run(GRPCURL, "-protoset", root / "build" / "nanollm.pb", "list")
    assert listed.stdout == ("nanollm.v1.GenerateService\nnanollm.v1.ModelAdminService\n"
                             "nanollm.v1.TrainService\n")


@pytest.mark.parametrize(("change", "stale"), [
    # source_info.binpb (the protos with comments, for reflection) changes with any of them.
    ("rename", "changed: nanollm/v1/generate_pb2.py; changed: nanollm/v1/generate_pb2.pyi; "
               "changed: nanollm/v1/source_info.binpb"),
    ("new_file", "missing: nanollm/v1/extra_pb2.py; missing: nanollm/v1/extra_pb2.pyi; "
                 "missing: nanollm/v1/extra_pb2_grpc.py; changed: nanollm/v1/source_info.binpb"),
    ("delete_file", "not generated by any .proto: nanollm/v1/model_admin_pb2.py; "
                    "not generated by any .proto: nanollm/v1/model_admin_pb2.pyi; "
                    "not generated by any .proto: nanollm/v1/model_admin_pb2_grpc.py; "
                    "changed: nanollm/v1/source_info.binpb"),
])
def test_stale_code_fails_the_check_until_make_proto(tmp_path: Path, change: str,
                                                     stale: str) -> None:
    root = copy_contracts(tmp_path)
    v1 = root / "proto" / "nanollm" / "v1"
    if change == "rename":
        edit(v1 / "generate.proto", "uint32 total_tokens = 3;", "uint32 all_tokens = 3;")
    elif change == "new_file":
        (v1 / "extra.proto").write_text('syntax = "proto3";\npackage nanollm.v1;\n'
                                        "message Extra {}\n")
    else:
        (v1 / "model_admin.proto").unlink()
    result = codegen(root, "--check")
    assert (result.returncode, result.stderr) == (
        1, f"generated code is stale ({stale}): run make proto\n")
    assert codegen(root).returncode == 0
    assert codegen(root, "--check").returncode == 0


def line_of(path: Path, text: str) -> int:
    """1-based number of the line of `path` that holds `text`."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_protoc_errors_are_one_line_and_leave_the_code_alone(tmp_path: Path) -> None:
    root = copy_contracts(tmp_path)
    before = (root / "nanollm" / "v1" / "generate_pb2.py").read_bytes()
    proto = root / "proto" / "nanollm" / "v1" / "generate.proto"
    line = line_of(proto, "uint32 total_tokens = 3;")
    edit(proto, "uint32 total_tokens = 3;", "uint32 total_tokens = 2;")
    result = codegen(root)
    assert result.returncode == 2
    assert result.stderr == (
        f'protoc failed: proto/nanollm/v1/generate.proto:{line}:25: Field number 2 has already '
        'been used in "nanollm.v1.Usage" by field "completion_tokens". Next available field '
        "number is 3.\n")
    assert (root / "nanollm" / "v1" / "generate_pb2.py").read_bytes() == before


# ----------------------------------------------------------------------------------------------
# buf lint and buf breaking


@needs_buf
def test_buf_lint_passes_and_catches_a_missing_comment(tmp_path: Path) -> None:
    assert run(BUF, "lint").returncode == 0
    root = copy_contracts(tmp_path)
    proto = root / "proto" / "nanollm" / "v1" / "generate.proto"
    line = line_of(proto, "uint32 prompt_tokens = 1;") - 1  # once its comment line is gone
    edit(proto, "  // Tokens in the prompt (counted once, whatever n is).\n", "")
    result = run(BUF, "lint", cwd=root)
    assert (result.returncode, result.stdout) == (100, (
        f'proto/nanollm/v1/generate.proto:{line}:3:Field "prompt_tokens" should have a '
        "non-empty comment for documentation.\n"))


def git(root: Path, *args: str) -> None:
    result = run("git", "-c", "user.name=t", "-c", "user.email=t@t", *args, cwd=root)
    assert result.returncode == 0, result.stderr


def breaking(root: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, REPO / "proto" / "breaking.py", "--buf", BUF, "--root", root)


@needs_buf
def test_buf_breaking_compares_with_the_previous_commit(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "README").write_text("before the contracts\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "no contracts yet")
    copy_contracts(root)
    git(root, "add", ".")
    result = breaking(root)  # uncommitted contracts, HEAD has none
    assert (result.returncode, result.stdout) == (
        0, "buf breaking: HEAD has no contracts yet, nothing to break\n")
    git(root, "commit", "-qm", "contracts")
    assert breaking(root).stdout == "buf breaking: HEAD~1 has no contracts yet, nothing to break\n"

    generate = root / "proto" / "nanollm" / "v1" / "generate.proto"
    edit(generate, "uint32 total_tokens = 3;", "uint32 all_tokens = 3;")
    result = breaking(root)  # an uncommitted edit is checked against HEAD
    assert result.returncode == 1
    assert 'Field "3" on message "Usage" changed name from "total_tokens" to "all_tokens".' in (
        result.stdout)
    assert result.stderr == ("buf breaking: the contracts break clients of HEAD (see above); "
                             "keep the old fields and add new ones instead\n")
    git(root, "commit", "-qam", "rename")
    assert "clients of HEAD~1" in breaking(root).stderr  # once committed, against HEAD~1

    edit(generate, "uint32 all_tokens = 3;", "uint32 all_tokens = 3;\n  // New.\n  bool x = 4;")
    git(root, "commit", "-qam", "add a field")
    assert (breaking(root).returncode, breaking(root).stdout) == (
        0, "buf breaking: no breaking change against HEAD~1\n")

    shallow = tmp_path / "shallow"
    assert run("git", "clone", "-q", "--depth=1", f"file://{root}", shallow).returncode == 0
    git(shallow, "remote", "remove", "origin")
    result = breaking(shallow)
    assert (result.returncode, result.stderr) == (2, (
        "buf breaking: HEAD~1 is not in this shallow clone and `git fetch --deepen=1` failed; "
        "clone with --depth=2 or more\n"))
