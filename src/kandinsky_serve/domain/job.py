"""Job: one GenerationRequest on its way through the queue, with an explicit state machine.

queued -> running -> succeeded | failed | canceled; running -> queued when a worker is lost and the
job is retried. Terminal states are final. Every store asserts transitions through `JobState.advance`.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.domain.meta import JobMeta, NativeMeta
from kandinsky_serve.domain.request import GenerationRequest


class InvalidTransition(RuntimeError):
    pass


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    def advance(self, to: JobState) -> JobState:
        if to not in _ALLOWED[self]:
            raise InvalidTransition(f"a {self.value} job cannot become {to.value}")
        return to


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED})
_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELED: frozenset(),
}


_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_job_id() -> str:
    """26 lowercase base32 characters, time-ordered (so ids sort by creation), like Replicate's."""
    stamp = time.time_ns() // 1_000_000
    return _id_text(stamp.to_bytes(6, "big") + os.urandom(10))


def idempotent_job_id(owner: str, idempotency_key: str) -> str:
    """The id of the job an owner's Idempotency-Key names: the same for every retry, so the stores'
    "enqueue of an existing id changes nothing" is what makes one job of concurrent retries. In the
    format of new_job_id (not time-ordered; lists order by created_at first)."""
    digest = hashlib.sha256(f"{len(owner)}:{owner}:{idempotency_key}".encode()).digest()
    return _id_text(digest[:16])


def _id_text(raw: bytes) -> str:
    value = int.from_bytes(raw, "big")
    return "".join(_ID_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Output(BaseModel):
    """One generated image, kept in the BlobStore under `key`."""

    model_config = ConfigDict(frozen=True)

    key: str
    seed: int
    content_type: str


class JobEvent(BaseModel):
    """Something that happened to a running job: a progress step and/or a log line."""

    model_config = ConfigDict(frozen=True)

    seq: int = 0  # assigned by the store, increasing per job
    at: datetime = Field(default_factory=utcnow)
    stage: Stage | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None

    @classmethod
    def progress(cls, event: ProgressEvent) -> JobEvent:
        return cls(stage=event.stage, step=event.step, total=event.total, message=tqdm_line(event))


def tqdm_line(event: ProgressEvent) -> str:
    """A progress line in the tqdm format Replicate clients parse for their progress bars. They read
    only lines that start with the percentage, so the stage goes last: " 40%|████      | 10/25 decoder"."""
    percent = int(100 * event.step / event.total) if event.total else 100
    filled = percent // 10
    bar = "█" * filled + " " * (10 - filled)
    return f"{percent:3d}%|{bar}| {event.step}/{event.total} {event.stage.value}"


class WebhookEvent(StrEnum):
    """What a webhook may be told of a job: it started, has new output or new log lines, ended."""

    START = "start"
    OUTPUT = "output"
    LOGS = "logs"
    COMPLETED = "completed"


class Webhook(BaseModel):
    """Where to POST news of a job, and which news. Deliveries go through the store's outbox
    (store/outbox.py), so they outlive the process that accepted the job."""

    model_config = ConfigDict(frozen=True)

    url: str
    events: frozenset[WebhookEvent]


class Job(BaseModel):
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: str = Field(default_factory=new_job_id)
    owner: str
    request: GenerationRequest
    state: JobState = JobState.QUEUED
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempts: int = 0
    error_code: ErrorCode | None = None
    error_message: str | None = None
    outputs: list[Output] = Field(default_factory=list)
    price: float = 0.0  # credits the job costs if it does not fail
    cancel_requested: bool = False
    data_removed: bool = False
    # what the dialect that made it needs to render it later (Replicate version, webhook, ...)
    meta: JobMeta = Field(default_factory=NativeMeta)
    # for a job made with an Idempotency-Key: a digest of the request as the caller sent it (before
    # the server drew a seed), which a retry with the same key must match; None otherwise
    fingerprint: str | None = None
    # the caller's deadline (Replicate's Cancel-After): past it the janitor cancels the job
    cancel_at: datetime | None = None
    webhooks: tuple[Webhook, ...] = ()

    @property
    def batch_key(self) -> str:
        return self.request.batch_key

    @property
    def queue_time(self) -> float | None:
        return (self.started_at - self.created_at).total_seconds() if self.started_at else None

    @property
    def predict_time(self) -> float | None:
        if self.started_at and self.completed_at:
            return (self.completed_at - self.started_at).total_seconds()
        return None

    @property
    def total_time(self) -> float | None:
        return (self.completed_at - self.created_at).total_seconds() if self.completed_at else None
