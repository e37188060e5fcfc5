"""TrainService: start, watch, describe, list, cancel, resume and delete training jobs.

Thin: the jobs, their processes and folders are trainer/jobs' (JobManager); this file turns
requests into manager calls (in worker threads: they read and write job folders) and the
manager's refusals into statuses. Every RPC needs the admin key when keys are configured
(server/auth.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from nanollm.v1 import train_pb2, train_pb2_grpc
from server.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServerError,
    UnavailableError,
)
from server.interceptors import note
from server.path_policy import resolve_under
from server.validation import validate_model_name
from trainer.jobs.errors import (
    JobError,
    JobNotFoundError,
    JobStateError,
    JobsUnavailableError,
    SpecError,
)
from trainer.jobs.manager import JobManager
from trainer.jobs.spec import SpecRules
from trainer.jobs.watch import POLL_S, JobWatch

T = TypeVar("T")

TRAIN_SERVICE = train_pb2.DESCRIPTOR.services_by_name["TrainService"].full_name


def server_error(exc: JobError) -> ServerError:
    """The status of a job manager refusal."""
    if isinstance(exc, SpecError):
        return InvalidArgumentError(exc.field_violations)
    if isinstance(exc, JobNotFoundError):
        return NotFoundError(exc.message)
    if isinstance(exc, JobStateError):
        return FailedPreconditionError(exc.message)
    if isinstance(exc, JobsUnavailableError):
        return UnavailableError(exc.message, reason=exc.reason)
    return FailedPreconditionError(exc.message)


async def run_job_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the job manager in a worker thread; its refusals become ServerErrors."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except JobError as exc:
        raise server_error(exc) from None


def _resolve_path(path: str, roots: list[Path], what: str, field: str) -> Path:
    """The server's one path policy, reporting through SpecError like every spec check."""
    try:
        return resolve_under(path, roots, what, field)
    except InvalidArgumentError as exc:
        raise SpecError(exc.field_violations) from None
    except NotFoundError as exc:
        raise SpecError([(field, exc.message)]) from None


def _model_name_problem(name: str) -> str | None:
    try:
        validate_model_name(name, "spec.model_name")
    except InvalidArgumentError as exc:
        return exc.field_violations[0][1]
    return None


def job_states(states: Sequence[int]) -> list[int]:
    """ListJobs' filter. An enum number the contract does not define (grpcurl sends any number
    given) or JOB_STATE_UNSPECIFIED would match no job: say so instead of listing nothing."""
    names = {v.number: v.name for v in train_pb2.JobState.DESCRIPTOR.values}
    usable = ", ".join(name for number, name in names.items() if number != 0)
    bad = [(f"states[{i}]", f"{names.get(state, state)} is not a state a job can be in; use "
                            f"one of {usable}")
           for i, state in enumerate(states) if state == 0 or state not in names]
    if bad:
        raise InvalidArgumentError(bad)
    return list(states)


SPEC_RULES = SpecRules(resolve_path=_resolve_path, model_name_problem=_model_name_problem)


class TrainService(train_pb2_grpc.TrainServiceServicer):
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    async def StartJob(self, request: train_pb2.StartJobRequest,
                       context: grpc.aio.ServicerContext) -> train_pb2.StartJobResponse:
        note(name=request.spec.name or "-")
        job = await run_job_call(self.jobs.start_job, request.spec)
        note(job=job.job_id)
        return train_pb2.StartJobResponse(job=job)

    async def WatchJob(self, request: train_pb2.WatchJobRequest,
                       context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[train_pb2.WatchJobResponse]:
        note(job=request.job_id)
        watch = await run_job_call(JobWatch, self.jobs, request.job_id,
                                   include_logs=not request.exclude_logs)
        yield await run_job_call(watch.snapshot)
        while not watch.finished:
            await asyncio.sleep(POLL_S)
            for message in await run_job_call(watch.poll):
                yield message

    async def GetJob(self, request: train_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> train_pb2.GetJobResponse:
        note(job=request.job_id)
        return train_pb2.GetJobResponse(job=await run_job_call(self.jobs.get, request.job_id))

    async def ListJobs(self, request: train_pb2.ListJobsRequest,
                       context: grpc.aio.ServicerContext) -> train_pb2.ListJobsResponse:
        jobs = await run_job_call(self.jobs.list, job_states(request.states))
        return train_pb2.ListJobsResponse(jobs=jobs)

    async def CancelJob(self, request: train_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> train_pb2.CancelJobResponse:
        note(job=request.job_id)
        return train_pb2.CancelJobResponse(
            job=await run_job_call(self.jobs.cancel, request.job_id))

    async def ResumeJob(self, request: train_pb2.ResumeJobRequest,
                        context: grpc.aio.ServicerContext) -> train_pb2.ResumeJobResponse:
        note(job=request.job_id)
        max_iters = request.max_iters if request.HasField("max_iters") else None
        job = await run_job_call(self.jobs.resume, request.job_id, max_iters)
        return train_pb2.ResumeJobResponse(job=job)

    async def DeleteJob(self, request: train_pb2.DeleteJobRequest,
                        context: grpc.aio.ServicerContext) -> train_pb2.DeleteJobResponse:
        note(job=request.job_id)
        await run_job_call(self.jobs.delete, request.job_id)
        return train_pb2.DeleteJobResponse(job_id=request.job_id)
