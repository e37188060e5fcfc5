"""ModelAdminService: list, describe, load, unload and pick the default model.

Thin: validation in server/validation.py, the work in server/registry.py, the keys in
server/auth.py (every RPC here needs the admin key when keys are configured).
"""

from __future__ import annotations

import grpc

from nanollm.v1 import model_admin_pb2, model_admin_pb2_grpc
from server.errors import FailedPreconditionError
from server.interceptors import note
from server.registry import ModelEntry, ModelRegistry
from server.train_service import run_job_call
from server.validation import validate_load, validate_model_name
from trainer.jobs.manager import JobManager


class ModelAdminService(model_admin_pb2_grpc.ModelAdminServiceServicer):
    def __init__(self, registry: ModelRegistry, jobs: JobManager | None = None) -> None:
        self.registry = registry
        self.jobs = jobs

    def _pb(self, entry: ModelEntry) -> model_admin_pb2.Model:
        return entry.to_pb(is_default=entry.name == self.registry.default_name)

    async def ListModels(self, request: model_admin_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> model_admin_pb2.ListModelsResponse:
        return model_admin_pb2.ListModelsResponse(
            models=[self._pb(e) for e in self.registry.entries()],
            default_model=self.registry.default_name or "")

    async def GetModel(self, request: model_admin_pb2.GetModelRequest,
                       context: grpc.aio.ServicerContext) -> model_admin_pb2.GetModelResponse:
        entry = self.registry.get(validate_model_name(request.name))
        return model_admin_pb2.GetModelResponse(model=self._pb(entry))

    async def LoadModel(self, request: model_admin_pb2.LoadModelRequest,
                        context: grpc.aio.ServicerContext) -> model_admin_pb2.LoadModelResponse:
        spec = validate_load(request)
        if spec.job_id is None:
            note(model=spec.name, path=spec.path)
            entry = await self.registry.load(spec)
        else:
            note(model=spec.name, job=spec.job_id)
            if self.jobs is None:
                raise FailedPreconditionError("this server runs no training jobs")
            folder = await run_job_call(self.jobs.checkpoint_of, spec.job_id)
            entry = await self.registry.load_from(spec, folder,
                                                  f"job {spec.job_id} ({folder.name})")
        return model_admin_pb2.LoadModelResponse(model=self._pb(entry))

    async def UnloadModel(self, request: model_admin_pb2.UnloadModelRequest,
                          context: grpc.aio.ServicerContext
                          ) -> model_admin_pb2.UnloadModelResponse:
        name = validate_model_name(request.name)
        note(model=name, cancel_inflight=request.cancel_inflight)
        completed, cancelled = await self.registry.unload(name, request.cancel_inflight)
        return model_admin_pb2.UnloadModelResponse(name=name, completed_requests=completed,
                                                   cancelled_requests=cancelled)

    async def SetDefaultModel(self, request: model_admin_pb2.SetDefaultModelRequest,
                              context: grpc.aio.ServicerContext
                              ) -> model_admin_pb2.SetDefaultModelResponse:
        entry, previous = self.registry.set_default(validate_model_name(request.name))
        note(model=entry.name, previous=previous or "-")
        return model_admin_pb2.SetDefaultModelResponse(model=self._pb(entry),
                                                       previous_default=previous)
