"""The janitor keeps Cancel-After deadlines: from the store's data, so any process's janitor can."""

from __future__ import annotations

from datetime import timedelta

from kandinsky_serve.blobs.local import LocalBlobStore
from kandinsky_serve.domain import GenerationRequest
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.sqlite import SqliteJobStore
from kandinsky_serve.worker.janitor import DEADLINE_NOTE, Janitor
from tests.contract import FakeClock


def test_jobs_past_their_deadline_are_canceled_as_a_caller_would_with_the_reason_in_their_log(tmp_path):
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock)
    changed: list[tuple[str, ...]] = []
    stopped: list[str] = []
    janitor = Janitor(
        Settings(data_dir=tmp_path),
        store,
        LocalBlobStore(tmp_path / "blobs"),
        changed.append,
        list,
        on_stop_running=stopped.append,
    )

    def job(seconds: float | None, created: int) -> Job:
        cancel_at = None if seconds is None else clock.now + timedelta(seconds=seconds)
        made = Job(owner="alice", request=GenerationRequest(prompt="a fox"), cancel_at=cancel_at)
        return store.enqueue(made.model_copy(update={"created_at": clock.now + timedelta(seconds=created)}))

    running, queued, later, free = job(5, 0), job(6, 1), job(60, 2), job(None, 3)
    (leased,) = store.lease("w1", max_batch=1, lease_seconds=30)
    assert leased.id == running.id
    clock.advance(5)
    assert janitor.cancel_overdue() == [running.id]
    clock.advance(1)
    assert janitor.cancel_overdue() == [queued.id]
    assert janitor.cancel_overdue() == []  # each once
    assert changed == [(running.id,), (queued.id,)]
    assert stopped == [running.id]  # its worker is told at once; the queued one needs no worker

    now_running, now_queued = store.get(running.id), store.get(queued.id)
    assert now_running.state is JobState.RUNNING and now_running.cancel_requested  # its worker stops it
    assert now_queued.state is JobState.CANCELED
    for job_id in (running.id, queued.id):
        assert [e.message for e in store.events(job_id)] == [DEADLINE_NOTE]
    assert store.get(later.id).state is store.get(free.id).state is JobState.QUEUED
    store.close()
