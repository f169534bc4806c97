"""Notifier: wakes the requests waiting on a job the moment a worker reports a change.

Publishing is thread-safe (the supervisor's watcher thread publishes); waiting is async.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from kandinsky_serve.domain.events import ProgressEvent


class Notifier(Protocol):
    def publish(
        self, job_ids: Iterable[str], progress: ProgressEvent | None = None, previews: Iterable[tuple[str, str]] = ()
    ) -> None: ...

    async def wait(self, job_id: str, timeout: float) -> bool:
        """True if the job changed within timeout seconds."""
        ...

    def progress(self, job_id: str) -> ProgressEvent | None:
        """The job's latest live progress, if it is running here."""
        ...

    def preview(self, job_id: str) -> str | None:
        """The job's latest preview (a data URI), if it has one."""
        ...

    def subscribe(self) -> asyncio.Queue[str]:
        """A queue that receives the id of every job that changes from now on (progress excluded)."""
        ...


class LocalNotifier:
    """For one process that hosts the API: asyncio events set from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._progress: dict[str, ProgressEvent] = {}
        self._previews: dict[str, str] = {}
        self._subscribers: list[asyncio.Queue[str]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(
        self, job_ids: Iterable[str], progress: ProgressEvent | None = None, previews: Iterable[tuple[str, str]] = ()
    ) -> None:
        ids = tuple(job_ids)
        for job_id in ids:
            if progress is None:  # a change of state: live progress and previews are over
                self._progress.pop(job_id, None)
                self._previews.pop(job_id, None)
            else:
                self._progress[job_id] = progress
        self._previews.update(previews)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, ids, progress is None)

    def _wake(self, job_ids: tuple[str, ...], changed: bool = True) -> None:
        for job_id in job_ids:
            if changed:
                for queue in self._subscribers:
                    queue.put_nowait(job_id)
            for event in self._waiters.get(job_id, ()):
                event.set()

    async def wait(self, job_id: str, timeout: float) -> bool:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    def progress(self, job_id: str) -> ProgressEvent | None:
        return self._progress.get(job_id)

    def preview(self, job_id: str) -> str | None:
        return self._previews.get(job_id)

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue
