"""Server reflection (grpc.reflection.v1alpha) that also resolves method names.

    enable_reflection([GENERATE_SERVICE, ...], server)

grpcurl describes a method by asking for the file that holds the symbol
`nanollm.v1.GenerateService.Generate`, the very name `grpcurl list <service>` prints. protobuf's
upb descriptor pool finds messages, fields, enums and services by name but not methods, so the
stock servicer answered NOT_FOUND ("Symbol not found") for every method. The pool given to the
servicer here looks a method up through its service.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool
from grpc_reflection.v1alpha import reflection

SERVICE_NAME = reflection.SERVICE_NAME


class MethodAwarePool:
    """A descriptor pool whose FindFileContainingSymbol also knows `package.Service.Method`;
    every other lookup is the wrapped pool's."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str) -> descriptor.FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (include SERVICE_NAME to list reflection itself)."""
    pool: Any = MethodAwarePool(descriptor_pool.Default())  # used through duck typing
    reflection.enable_server_reflection(service_names, server, pool=pool)
