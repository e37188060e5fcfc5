import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_INTERRUPTED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_INTERRUPTED: JobState

class ModelShape(_message.Message):
    __slots__ = ("preset", "n_layer", "n_head", "n_embd", "block_size", "bias", "tokenizer")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    N_LAYER_FIELD_NUMBER: _ClassVar[int]
    N_HEAD_FIELD_NUMBER: _ClassVar[int]
    N_EMBD_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    preset: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    bias: bool
    tokenizer: str
    def __init__(self, preset: _Optional[str] = ..., n_layer: _Optional[int] = ..., n_head: _Optional[int] = ..., n_embd: _Optional[int] = ..., block_size: _Optional[int] = ..., bias: _Optional[bool] = ..., tokenizer: _Optional[str] = ...) -> None: ...

class TrainingParams(_message.Message):
    __slots__ = ("max_iters", "batch_size", "gradient_accumulation_steps", "learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "decay_lr", "weight_decay", "beta1", "beta2", "grad_clip", "eval_interval", "eval_iters", "log_interval", "dropout", "dtype", "seed", "num_threads")
    MAX_ITERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ITERS_FIELD_NUMBER: _ClassVar[int]
    LR_DECAY_ITERS_FIELD_NUMBER: _ClassVar[int]
    DECAY_LR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    GRAD_CLIP_FIELD_NUMBER: _ClassVar[int]
    EVAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EVAL_ITERS_FIELD_NUMBER: _ClassVar[int]
    LOG_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_THREADS_FIELD_NUMBER: _ClassVar[int]
    max_iters: int
    batch_size: int
    gradient_accumulation_steps: int
    learning_rate: float
    min_lr: float
    warmup_iters: int
    lr_decay_iters: int
    decay_lr: bool
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    eval_interval: int
    eval_iters: int
    log_interval: int
    dropout: float
    dtype: str
    seed: int
    num_threads: int
    def __init__(self, max_iters: _Optional[int] = ..., batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., min_lr: _Optional[float] = ..., warmup_iters: _Optional[int] = ..., lr_decay_iters: _Optional[int] = ..., decay_lr: _Optional[bool] = ..., weight_decay: _Optional[float] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., grad_clip: _Optional[float] = ..., eval_interval: _Optional[int] = ..., eval_iters: _Optional[int] = ..., log_interval: _Optional[int] = ..., dropout: _Optional[float] = ..., dtype: _Optional[str] = ..., seed: _Optional[int] = ..., num_threads: _Optional[int] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("path", "text", "url", "max_download_bytes", "train_val_split")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_VAL_SPLIT_FIELD_NUMBER: _ClassVar[int]
    path: str
    text: bytes
    url: str
    max_download_bytes: int
    train_val_split: float
    def __init__(self, path: _Optional[str] = ..., text: _Optional[bytes] = ..., url: _Optional[str] = ..., max_download_bytes: _Optional[int] = ..., train_val_split: _Optional[float] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "scratch", "checkpoint_path", "from_job_id", "training", "data", "ranks", "device", "load_when_done", "model_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCRATCH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_PATH_FIELD_NUMBER: _ClassVar[int]
    FROM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LOAD_WHEN_DONE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    scratch: ModelShape
    checkpoint_path: str
    from_job_id: str
    training: TrainingParams
    data: DataSource
    ranks: int
    device: str
    load_when_done: bool
    model_name: str
    def __init__(self, name: _Optional[str] = ..., scratch: _Optional[_Union[ModelShape, _Mapping]] = ..., checkpoint_path: _Optional[str] = ..., from_job_id: _Optional[str] = ..., training: _Optional[_Union[TrainingParams, _Mapping]] = ..., data: _Optional[_Union[DataSource, _Mapping]] = ..., ranks: _Optional[int] = ..., device: _Optional[str] = ..., load_when_done: _Optional[bool] = ..., model_name: _Optional[str] = ...) -> None: ...

class StepMetrics(_message.Message):
    __slots__ = ("step", "loss", "lr", "grad_norm", "tokens_per_second", "mfu", "step_time_ms", "tokens", "eta_seconds", "time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MFU_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_second: float
    mfu: float
    step_time_ms: float
    tokens: int
    eta_seconds: float
    time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., loss: _Optional[float] = ..., lr: _Optional[float] = ..., grad_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., mfu: _Optional[float] = ..., step_time_ms: _Optional[float] = ..., tokens: _Optional[int] = ..., eta_seconds: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ("step", "train_loss", "val_loss", "best_val_loss", "improved", "time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    IMPROVED_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    improved: bool
    time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., train_loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., best_val_loss: _Optional[float] = ..., improved: _Optional[bool] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("step", "kind", "path", "val_loss", "time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    kind: str
    path: str
    val_loss: float
    time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., kind: _Optional[str] = ..., path: _Optional[str] = ..., val_loss: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("text", "time")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    text: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, text: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("state", "reason", "step", "time")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    reason: str
    step: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., step: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "name", "state", "reason", "spec", "created_at", "started_at", "ended_at", "step", "max_iters", "last_step", "last_eval", "best_val_loss", "checkpoint", "queue_position", "runs", "loaded_model", "uploaded_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERS_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_EVAL_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODEL_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: JobState
    reason: str
    spec: JobSpec
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    step: int
    max_iters: int
    last_step: StepMetrics
    last_eval: EvalResult
    best_val_loss: float
    checkpoint: str
    queue_position: int
    runs: int
    loaded_model: str
    uploaded_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[int] = ..., max_iters: _Optional[int] = ..., last_step: _Optional[_Union[StepMetrics, _Mapping]] = ..., last_eval: _Optional[_Union[EvalResult, _Mapping]] = ..., best_val_loss: _Optional[float] = ..., checkpoint: _Optional[str] = ..., queue_position: _Optional[int] = ..., runs: _Optional[int] = ..., loaded_model: _Optional[str] = ..., uploaded_bytes: _Optional[int] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "exclude_logs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_LOGS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    exclude_logs: bool
    def __init__(self, job_id: _Optional[str] = ..., exclude_logs: _Optional[bool] = ...) -> None: ...

class JobSnapshot(_message.Message):
    __slots__ = ("job", "steps", "evals", "recent_logs")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EVALS_FIELD_NUMBER: _ClassVar[int]
    RECENT_LOGS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    steps: _containers.RepeatedCompositeFieldContainer[StepMetrics]
    evals: _containers.RepeatedCompositeFieldContainer[EvalResult]
    recent_logs: _containers.RepeatedCompositeFieldContainer[LogLine]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepMetrics, _Mapping]]] = ..., evals: _Optional[_Iterable[_Union[EvalResult, _Mapping]]] = ..., recent_logs: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("snapshot", "state_change", "step", "eval", "checkpoint", "log")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    snapshot: JobSnapshot
    state_change: StateChange
    step: StepMetrics
    eval: EvalResult
    checkpoint: CheckpointSaved
    log: LogLine
    def __init__(self, snapshot: _Optional[_Union[JobSnapshot, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., step: _Optional[_Union[StepMetrics, _Mapping]] = ..., eval: _Optional[_Union[EvalResult, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("job_id", "max_iters")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    max_iters: int
    def __init__(self, job_id: _Optional[str] = ..., max_iters: _Optional[int] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
