"""A wait reads the store per change of the job, not per step; the live progress still sees every step.

A real job (the tiny engine, 64x64, 32 decoder steps) runs through the runner in a thread; what it
reports goes through the Relay to a LocalNotifier on the event loop, as in `serve`. The service
waits on a real SQLite store behind a proxy that counts its reads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.blobs.local import LocalBlobStore
from kandinsky_serve.domain import GenerationRequest, Stage
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.sqlite import SqliteJobStore
from kandinsky_serve.worker.messages import Progress, StateChanged, ToSupervisor, WorkerState
from kandinsky_serve.worker.relay import Relay
from kandinsky_serve.worker.runner import Runner

STEPS = 32
PERIODIC = 5.0  # JobService.wait looks at the store at least this often, reports or not


class CountingStore:
    """The real store; counts the reads of a job (`get`)."""

    def __init__(self, store: SqliteJobStore) -> None:
        self.store = store
        self.gets = 0

    def get(self, job_id: str) -> Job | None:
        self.gets += 1
        return self.store.get(job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_wait_reads_the_store_per_change_while_the_stream_gets_every_step(tmp_path, engine22):
    settings = Settings(model="tiny", data_dir=tmp_path, max_batch=1, lease_seconds=30)
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    counting = CountingStore(store)
    blobs = LocalBlobStore(tmp_path / "blobs")
    notifier = LocalNotifier()
    service = JobService(settings, counting, blobs, notifier)  # type: ignore[arg-type]
    relayed: list[ToSupervisor] = []
    relay = Relay(notifier, relayed.append)
    runner = Runner("worker-1", settings, store, blobs, engine22, relay)
    request = GenerationRequest.parse(
        {"prompt": "a fox", "steps": STEPS, "prior_steps": 2, "width": 64, "height": 64, "seed": 1}
    )
    job = service.submit(request, Caller(owner="me", key=None))

    async def follow(steps: list[int]) -> None:
        # what the native event stream does: every step, in order, until the record changes to terminal
        with notifier.watch(job.id, steps=True) as watch:
            while (update := await watch.next(60.0)) is not None:
                if update.progress is not None and update.progress.stage is Stage.DECODER:
                    steps.append(update.progress.step)
                elif update.changed and (await asyncio.to_thread(store.get, job.id)).state.terminal:
                    return

    async def main() -> tuple[Job, list[int], int, float]:
        notifier.bind(asyncio.get_running_loop())
        steps: list[int] = []
        following = asyncio.create_task(follow(steps))
        started = time.monotonic()
        waiting = asyncio.create_task(service.wait(job.id, "me", 60))
        while counting.gets < 1:  # the wait has read the job (queued) and is waiting
            await asyncio.sleep(0.01)
        worker = threading.Thread(target=runner.run_once)
        worker.start()
        done = await waiting
        elapsed = time.monotonic() - started
        await asyncio.wait_for(following, 10)
        await asyncio.to_thread(worker.join)
        return done, steps, counting.gets, elapsed

    try:
        done, steps, reads, elapsed = asyncio.run(main())
    finally:
        store.close()

    assert done.state is JobState.SUCCEEDED
    decoder = [m for m in relayed if isinstance(m, Progress) and m.event.stage is Stage.DECODER]
    assert [m.event.step for m in decoder] == list(range(1, STEPS + 1))  # published at every step
    assert steps == list(range(1, STEPS + 1))  # and the step watch received each, in order
    # the first read, one when the job started, one when it finished; one more per quiet spell
    assert reads <= 3 + int(elapsed // PERIODIC), (reads, elapsed)
    assert reads < len(decoder) // 4
    assert StateChanged(WorkerState.BUSY) in relayed  # the relay passed the rest on too (metrics)
