"""TrainService calls of the typed clients (mixed into `Client` and `AsyncClient`).

    from nanollm.client import Client
    from nanollm.v1 import train_pb2

    spec = train_pb2.JobSpec(
        name="tiny", scratch=train_pb2.ModelShape(n_layer=4, n_head=4, n_embd=128,
                                                  block_size=128, tokenizer="byte"),
        training=train_pb2.TrainingParams(max_iters=500, learning_rate=2e-3),
        data=train_pb2.DataSource(path="shakespeare.txt"), device="cpu")
    with Client("127.0.0.1:50051", api_key=ADMIN_KEY) as client:
        job = client.start_job(spec)
        with client.watch_job(job.job_id) as watch:
            for message in watch:               # the snapshot, then live events
                if message.HasField("step"):
                    print(message.step.step, message.step.loss)
        client.load_job_model("tiny", job.job_id)      # serve what it trained

Every call needs the admin key on a server with keys. Failures raise NanoLLMError subclasses, as
for the other services (InvalidArgumentError lists the spec's field violations).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nanollm.client_streams import AsyncCallStream, CallStream
from nanollm.v1 import model_admin_pb2, model_admin_pb2_grpc, train_pb2, train_pb2_grpc


def _resume_request(job_id: str, max_iters: int | None) -> train_pb2.ResumeJobRequest:
    request = train_pb2.ResumeJobRequest(job_id=job_id)
    if max_iters is not None:
        request.max_iters = max_iters
    return request


def _load_job_request(name: str, job_id: str, set_default: bool
                      ) -> model_admin_pb2.LoadModelRequest:
    return model_admin_pb2.LoadModelRequest(name=name, job_id=job_id, set_default=set_default)


# The messages of one WatchJob call; leaving a `with` block (or `cancel()`) ends the watch (the
# job goes on).
WatchStream = CallStream[train_pb2.WatchJobResponse]
AsyncWatchStream = AsyncCallStream[train_pb2.WatchJobResponse]


class TrainMethods:
    """TrainService (and LoadModel by job id) for the blocking `Client`."""

    train_stub: train_pb2_grpc.TrainServiceStub
    admin_stub: model_admin_pb2_grpc.ModelAdminServiceStub

    _s: Any  # the client's settings (metadata, default timeout)

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        raise NotImplementedError  # Client's own

    def start_job(self, spec: train_pb2.JobSpec, *, timeout: float | None = None
                  ) -> train_pb2.Job:
        request = train_pb2.StartJobRequest(spec=spec)
        return self._call(self.train_stub.StartJob, request, timeout).job

    def watch_job(self, job_id: str, *, exclude_logs: bool = False,
                  timeout: float | None = None) -> WatchStream:
        request = train_pb2.WatchJobRequest(job_id=job_id, exclude_logs=exclude_logs)
        return WatchStream(self.train_stub.WatchJob(request, **self._s.call_kwargs(timeout)))

    def get_job(self, job_id: str, *, timeout: float | None = None) -> train_pb2.Job:
        request = train_pb2.GetJobRequest(job_id=job_id)
        return self._call(self.train_stub.GetJob, request, timeout).job

    def list_jobs(self, states: Iterable[int] = (), *, timeout: float | None = None
                  ) -> list[train_pb2.Job]:
        request = train_pb2.ListJobsRequest(states=list(states))
        return list(self._call(self.train_stub.ListJobs, request, timeout).jobs)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> train_pb2.Job:
        request = train_pb2.CancelJobRequest(job_id=job_id)
        return self._call(self.train_stub.CancelJob, request, timeout).job

    def resume_job(self, job_id: str, *, max_iters: int | None = None,
                   timeout: float | None = None) -> train_pb2.Job:
        return self._call(self.train_stub.ResumeJob, _resume_request(job_id, max_iters),
                          timeout).job

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> None:
        self._call(self.train_stub.DeleteJob, train_pb2.DeleteJobRequest(job_id=job_id), timeout)

    def load_job_model(self, name: str, job_id: str, *, set_default: bool = False,
                       timeout: float | None = None) -> model_admin_pb2.Model:
        """Serve a job's checkpoint (best, else latest) as model `name`."""
        request = _load_job_request(name, job_id, set_default)
        return self._call(self.admin_stub.LoadModel, request, timeout).model


class AsyncTrainMethods:
    """TrainService (and LoadModel by job id) for `AsyncClient`."""

    train_stub: train_pb2_grpc.TrainServiceStub
    admin_stub: model_admin_pb2_grpc.ModelAdminServiceStub

    _s: Any  # the client's settings (metadata, default timeout)

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        raise NotImplementedError  # AsyncClient's own

    async def start_job(self, spec: train_pb2.JobSpec, *, timeout: float | None = None
                        ) -> train_pb2.Job:
        request = train_pb2.StartJobRequest(spec=spec)
        return (await self._call(self.train_stub.StartJob, request, timeout)).job

    def watch_job(self, job_id: str, *, exclude_logs: bool = False,
                  timeout: float | None = None) -> AsyncWatchStream:
        request = train_pb2.WatchJobRequest(job_id=job_id, exclude_logs=exclude_logs)
        return AsyncWatchStream(self.train_stub.WatchJob(request, **self._s.call_kwargs(timeout)))

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> train_pb2.Job:
        request = train_pb2.GetJobRequest(job_id=job_id)
        return (await self._call(self.train_stub.GetJob, request, timeout)).job

    async def list_jobs(self, states: Iterable[int] = (), *, timeout: float | None = None
                        ) -> list[train_pb2.Job]:
        request = train_pb2.ListJobsRequest(states=list(states))
        return list((await self._call(self.train_stub.ListJobs, request, timeout)).jobs)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> train_pb2.Job:
        request = train_pb2.CancelJobRequest(job_id=job_id)
        return (await self._call(self.train_stub.CancelJob, request, timeout)).job

    async def resume_job(self, job_id: str, *, max_iters: int | None = None,
                         timeout: float | None = None) -> train_pb2.Job:
        request = _resume_request(job_id, max_iters)
        return (await self._call(self.train_stub.ResumeJob, request, timeout)).job

    async def delete_job(self, job_id: str, *, timeout: float | None = None) -> None:
        await self._call(self.train_stub.DeleteJob, train_pb2.DeleteJobRequest(job_id=job_id),
                         timeout)

    async def load_job_model(self, name: str, job_id: str, *, set_default: bool = False,
                             timeout: float | None = None) -> model_admin_pb2.Model:
        """Serve a job's checkpoint (best, else latest) as model `name`."""
        request = _load_job_request(name, job_id, set_default)
        return (await self._call(self.admin_stub.LoadModel, request, timeout)).model
