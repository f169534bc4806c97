"""The typed messages a worker process and its supervisor exchange over their pipe."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kandinsky_serve.domain.events import ProgressEvent


class WorkerState(StrEnum):
    STARTING = "starting"  # process up, loading the model
    WARMING = "warming"  # model loaded, running its shape buckets once (graphs, compiles): not ready yet
    READY = "ready"  # waiting for work
    BUSY = "busy"  # running a batch
    DRAINING = "draining"  # finishing its batch, taking no more
    DEFUNCT = "defunct"  # died; the supervisor restarts it


# worker -> supervisor


@dataclass(frozen=True)
class StateChanged:
    state: WorkerState
    device: str = ""
    detail: str = ""  # e.g. why a model failed to load


@dataclass(frozen=True)
class JobsChanged:
    """These jobs' records changed (started, finished); waiters on them should look again."""

    job_ids: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    job_ids: tuple[str, ...]
    event: ProgressEvent
    seconds: float = 0.0  # since the previous step of the same stage (0 for a stage's first step)
    previews: tuple[tuple[str, str], ...] = ()  # (job id, JPEG data URI), now and then


@dataclass(frozen=True)
class BatchDone:
    """What a batch cost, for the metrics."""

    size: int
    images: int
    seconds: float
    outcome: str  # succeeded | failed | canceled (of the batch as a whole; failed wins)
    device: str
    peak_memory_bytes: int = 0  # on a GPU; 0 on a CPU
    job_seconds: tuple[float, ...] = ()  # each job's time from submission to its end


# supervisor -> worker


@dataclass(frozen=True)
class Wake:
    """Jobs were queued: look now rather than at the next poll."""


@dataclass(frozen=True)
class Cancel:
    job_id: str


ToSupervisor = StateChanged | JobsChanged | Progress | BatchDone
ToWorker = Wake | Cancel
