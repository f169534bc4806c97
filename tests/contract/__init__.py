"""Contract suites: every JobStore and BlobStore backend passes the same tests.

Backends are built here, in one place, so that the tests (and the processes they spawn) can open
any of them by name. A new backend is a branch below and a name in JOB_BACKENDS or BLOB_BACKENDS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urldefrag

from kandinsky_serve.blobs import BlobStore, LocalBlobStore
from kandinsky_serve.blobs.redis import RedisBlobStore
from kandinsky_serve.domain.job import Job, Output, utcnow
from kandinsky_serve.store import JobStore, SqliteJobStore
from kandinsky_serve.store.codec import without_inputs
from kandinsky_serve.store.redis import RedisJobStore

JOB_BACKENDS = ["sqlite", "redis"]
BLOB_BACKENDS = ["local", "redis"]


class FakeClock:
    """A clock the test moves by hand, so leases expire without sleeping."""

    def __init__(self, start: datetime = datetime(2025, 1, 1, 12, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def open_job_store(backend: str, location: str, clock: Callable[[], datetime] = utcnow) -> JobStore:
    """A store on the data at `location`: opening it again reaches the same jobs. For sqlite a directory;
    for redis a server's URL with the key prefix as its fragment ('redis://host:port/0#prefix')."""
    if backend == "sqlite":
        return SqliteJobStore(Path(location) / "jobs.db", clock=clock)
    if backend == "redis":
        url, prefix = urldefrag(location)
        return RedisJobStore(url, prefix=prefix, clock=clock)
    raise ValueError(f"no job store backend {backend!r}")


def open_blob_store(backend: str, location: str) -> BlobStore:
    if backend == "local":
        return LocalBlobStore(Path(location) / "blobs")
    if backend == "redis":
        url, prefix = urldefrag(location)
        return RedisBlobStore(url, prefix=prefix)
    raise ValueError(f"no blob store backend {backend!r}")


# -- helpers of the JobStore suites ------------------------------------------------------------

W1, W2 = "worker-1", "worker-2"
LEASE = 60.0


def output(job_id: str, i: int = 0) -> Output:
    return Output(key=f"outputs/{job_id}/{i}.webp", seed=42 + i, content_type="image/webp")


def ids(jobs: Iterable[Job]) -> list[str]:
    return [job.id for job in jobs]


def lease_one(store: JobStore, worker: str = W1, lease_seconds: float = LEASE) -> Job:
    (job,) = store.lease(worker, max_batch=1, lease_seconds=lease_seconds)
    return job


def as_read(job: Job) -> Job:
    """The job as reads (get, list_jobs, cancel) return it: its request without input images."""
    return job.model_copy(update={"request": without_inputs(job.request)})


def image_bytes_in(job: Job) -> list[bytes]:
    """Every input image a job's request carries."""
    request = job.request
    found = [request.image, request.mask, request.hint, *(item.image for item in request.fuse)]
    return [data for data in found if data is not None]


def inputs_kept(store: JobStore, job_id: str) -> bool:
    """Whether the backend still holds the job's input images in the place only lease() reads."""
    if isinstance(store, SqliteJobStore):
        return store._connection().execute("SELECT 1 FROM inputs WHERE job_id = ?", (job_id,)).fetchone() is not None
    if isinstance(store, RedisJobStore):
        return bool(store._redis.exists(f"{store._p}inp:{job_id}"))
    raise TypeError(f"no inputs probe for {type(store).__name__}")


def lease_holder(store: JobStore, job_id: str) -> str | None:
    """The worker the backend records as holding the job's lease, if any."""
    if isinstance(store, SqliteJobStore):
        row = store._connection().execute("SELECT worker FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]
    if isinstance(store, RedisJobStore):
        return store._redis.hget(f"{store._p}job:{job_id}", "worker") or None
    raise TypeError(f"no lease probe for {type(store).__name__}")
