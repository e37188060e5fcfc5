"""What the job manager refuses, one exception type per reason; TrainService maps each to a gRPC
status (server/train_service.py)."""

from __future__ import annotations

from collections.abc import Sequence

FieldViolation = tuple[str, str]  # (request field path such as "spec.training.max_iters", why)


class JobError(Exception):
    """Base of the job manager's refusals; the message is meant for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(JobError):
    """A job spec with bad fields: every violation found, not only the first."""

    def __init__(self, field_violations: Sequence[FieldViolation]) -> None:
        if not field_violations:
            raise ValueError("SpecError needs at least one field violation")
        self.field_violations = list(field_violations)
        super().__init__("invalid job spec: " + "; ".join(
            f"{field}: {why}" for field, why in self.field_violations))


class JobNotFoundError(JobError):
    """No job with that id under the jobs root."""


class JobStateError(JobError):
    """The job's state does not allow the operation (cancel an ended job, delete a running one)."""


class JobsUnavailableError(JobError):
    """The manager takes no work now: it is shutting down ("draining"), or its jobs root is
    unusable (in use by another server, not a folder: "unavailable")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
