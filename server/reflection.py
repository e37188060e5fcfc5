"""Server reflection (grpc.reflection.v1alpha) that also resolves method names.

    enable_reflection([GENERATE_SERVICE, ...], server)

grpcurl describes a method by asking for the file that holds the symbol
`nanollm.v1.GenerateService.Generate`, the very name `grpcurl list <service>` prints. protobuf's
upb descriptor pool finds messages, fields, enums and services by name but not methods, so the
stock servicer answered NOT_FOUND ("Symbol not found") for every method. The pool given to the
servicer here looks a method up through its service.

The compiled descriptors in the generated modules carry no comments, so `grpcurl describe`
would show bare messages. The files it serves here get back their comments (source code info)
from nanollm/v1/source_info.binpb, which `make proto` writes next to the generated code.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

import nanollm.v1

SERVICE_NAME = reflection.SERVICE_NAME
SOURCE_INFO = Path(nanollm.v1.__file__).parent / "source_info.binpb"


@functools.cache
def source_info() -> dict[str, descriptor_pb2.SourceCodeInfo]:
    """Comments of our .proto files, by file name ({} if the file is missing)."""
    try:
        data = SOURCE_INFO.read_bytes()
    except OSError:
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {f.name: f.source_code_info for f in files if f.HasField("source_code_info")}


class DocumentedFile:
    """A file descriptor whose CopyToProto (what reflection serializes) includes comments;
    its dependencies are wrapped too, since reflection sends them along."""

    def __init__(self, file: descriptor.FileDescriptor) -> None:
        self._file = file

    @property
    def dependencies(self) -> list[DocumentedFile]:
        return [DocumentedFile(d) for d in self._file.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self._file.CopyToProto(proto)
        info = source_info().get(self._file.name)
        if info is not None:
            proto.source_code_info.CopyFrom(info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class MethodAwarePool:
    """A descriptor pool whose FindFileContainingSymbol also knows `package.Service.Method`
    and whose files come with their comments; every other lookup is the wrapped pool's."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileByName(self, name: str) -> DocumentedFile:
        return DocumentedFile(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, name: str) -> DocumentedFile:
        try:
            return DocumentedFile(self._pool.FindFileContainingSymbol(name))
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return DocumentedFile(service.file)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (include SERVICE_NAME to list reflection itself)."""
    pool: Any = MethodAwarePool(descriptor_pool.Default())  # used through duck typing
    reflection.enable_server_reflection(service_names, server, pool=pool)
