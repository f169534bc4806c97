"""Notifier: tells the requests following a job what happens to it, the moment a worker reports it.

Two kinds of news, kept apart. A change of the job's record (started, finished, canceled, requeued)
goes to every watch of the job: waiters (`?wait=`, the synchronous dialects) re-read the store only
then. Live progress (every step, now and then a preview) goes only to the watches that asked for
steps (the native event stream), so a wait costs a store read per change of state, not per step.

Publishing is thread-safe (the supervisor's and the bus's threads publish); watching is async.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from kandinsky_serve.domain.events import ProgressEvent


@dataclass(frozen=True, slots=True)
class Update:
    """One piece of news about a watched job: a step (with the job's new preview, if the step made
    one), or, with no progress, a change of its record (look in the store)."""

    progress: ProgressEvent | None = None
    preview: str | None = None

    @property
    def changed(self) -> bool:
        return self.progress is None


class Watch:
    """One follower of one job: every update since it began, in order. Lives on the event loop."""

    def __init__(self, steps: bool) -> None:
        self.steps = steps  # whether it receives progress, or changes of the record only
        self._pending: collections.deque[Update] = collections.deque()
        self._arrived = asyncio.Event()

    def put(self, update: Update) -> None:
        self._pending.append(update)
        self._arrived.set()

    async def next(self, timeout: float) -> Update | None:
        """The next update, or None when none came within timeout seconds."""
        if not self._pending:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return None
        return self._pending.popleft()

    async def changed(self, timeout: float) -> bool:
        """True once the job's record has changed since the last call (several changes count as one:
        one read of the store sees them all); False after timeout seconds without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (update := await self.next(max(deadline - loop.time(), 0.0))) is not None:
            if update.changed:
                self._pending.clear()
                return True
        return False


class Notifier(Protocol):
    def publish(self, job_ids: Iterable[str]) -> None:
        """These jobs' records changed (their live progress and previews are over)."""
        ...

    def publish_progress(
        self, job_ids: Iterable[str], progress: ProgressEvent, previews: Iterable[tuple[str, str]] = ()
    ) -> None:
        """These jobs made a step; previews: (job id, data URI) of those that have a new one."""
        ...

    def watch(self, job_id: str, steps: bool = False) -> AbstractContextManager[Watch]:
        """Updates about the job from now on: changes of its record, and with steps every step (the
        first update is then the latest step, if the job is running here). Called on the loop."""
        ...

    async def wait(self, job_id: str, timeout: float) -> bool:
        """True if the job's record changed within timeout seconds (progress does not count). For a
        loop around reads of the store use watch(), begun before the first read."""
        ...

    def progress(self, job_id: str) -> ProgressEvent | None:
        """The job's latest live progress, if it is running here."""
        ...

    def subscribe(self) -> asyncio.Queue[str]:
        """A queue that receives the id of every job that changes from now on (progress excluded)."""
        ...


class LocalNotifier:
    """For one process that hosts the API: publishers hand their news to the event loop, which
    records it and passes it on to the watches."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watches: collections.defaultdict[str, set[Watch]] = collections.defaultdict(set)
        self._progress: dict[str, ProgressEvent] = {}
        self._previews: dict[str, str] = {}
        self._subscribers: list[asyncio.Queue[str]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, job_ids: Iterable[str]) -> None:
        self._on_loop(self._changed, tuple(job_ids))

    def publish_progress(
        self, job_ids: Iterable[str], progress: ProgressEvent, previews: Iterable[tuple[str, str]] = ()
    ) -> None:
        self._on_loop(self._stepped, tuple(job_ids), progress, dict(previews))

    def _on_loop(self, call: Callable[..., None], *args: object) -> None:
        # the latest progress is recorded on the loop too: a watch that begins by reading it then
        # receives exactly the steps after it, none twice and none out of order
        if self._loop is None:
            call(*args)
            return
        try:
            self._loop.call_soon_threadsafe(call, *args)
        except RuntimeError:  # the loop has closed: nobody is left to tell
            pass

    def _changed(self, job_ids: tuple[str, ...]) -> None:
        for job_id in job_ids:
            self._progress.pop(job_id, None)
            self._previews.pop(job_id, None)
            for queue in self._subscribers:
                queue.put_nowait(job_id)
            for watch in self._watches.get(job_id, ()):
                watch.put(Update())

    def _stepped(self, job_ids: tuple[str, ...], progress: ProgressEvent, previews: dict[str, str]) -> None:
        self._previews.update(previews)
        for job_id in job_ids:
            self._progress[job_id] = progress
            for watch in self._watches.get(job_id, ()):
                if watch.steps:
                    watch.put(Update(progress, previews.get(job_id)))

    @contextmanager
    def watch(self, job_id: str, steps: bool = False) -> Iterator[Watch]:
        watch = Watch(steps)
        if steps and (latest := self._progress.get(job_id)) is not None:
            watch.put(Update(latest, self._previews.get(job_id)))
        self._watches[job_id].add(watch)
        try:
            yield watch
        finally:
            self._watches[job_id].discard(watch)
            if not self._watches[job_id]:
                del self._watches[job_id]

    async def wait(self, job_id: str, timeout: float) -> bool:
        with self.watch(job_id) as watch:
            return await watch.changed(timeout)

    def progress(self, job_id: str) -> ProgressEvent | None:
        return self._progress.get(job_id)

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue
