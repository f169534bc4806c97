"""What the SQLite backend guarantees beyond the contract: its settings, locking, rollback and schema."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kandinsky_serve.domain.job import JobState
from kandinsky_serve.store import SqliteJobStore


def test_sqlite_runs_in_wal_with_normal_sync_between_durable_writes(tmp_path):
    with SqliteJobStore(tmp_path / "jobs.db") as store:
        assert store.pragmas() == {
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout_ms": 5000,
            "schema_version": 3,
        }


def test_what_a_caller_is_told_is_stored_is_synced_to_disk_and_worker_bookkeeping_is_not(tmp_path, make_job):
    # a power loss may take back a worker's lease or events (the job just runs again), never an
    # acknowledged submission or cancel; FULL makes SQLite fsync the WAL at that commit
    with SqliteJobStore(tmp_path / "jobs.db") as store:
        statements: list[str] = []
        store._connection().set_trace_callback(statements.append)

        def synced(action) -> bool:
            statements.clear()
            action()
            begin = statements.index("BEGIN IMMEDIATE")
            return "PRAGMA synchronous = FULL" in statements[:begin]

        job = make_job()
        assert synced(lambda: store.enqueue(job))
        assert not synced(lambda: store.lease("w1", max_batch=1, lease_seconds=30))
        assert not synced(lambda: store.add_events(job.id, []) or store.heartbeat("w1", [job.id], 30))
        assert synced(lambda: store.cancel(job.id))
        assert store.pragmas()["synchronous"] == "normal"


def test_sqlite_waits_for_another_writer_instead_of_failing(tmp_path, make_job):
    store = SqliteJobStore(tmp_path / "jobs.db")
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    started = time.monotonic()
    job = store.enqueue(make_job())
    assert time.monotonic() - started >= 0.25
    assert store.get(job.id) == job
    other.close()
    store.close()


def test_sqlite_rolls_back_a_write_that_fails_halfway(tmp_path, make_job, monkeypatch):
    import kandinsky_serve.store.sqlite_rows as module

    store = SqliteJobStore(tmp_path / "jobs.db")
    job = make_job()

    def broken_save(*args, **kwargs):
        raise OSError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(module, "save", broken_save)
        with pytest.raises(OSError, match="disk on fire"):
            store.enqueue(job)
    assert store.get(job.id) is None  # the row inserted before the failure was rolled back
    assert store.enqueue(job) == job  # and no transaction was left open
    store.close()


def test_sqlite_refuses_a_database_from_a_newer_version(tmp_path):
    SqliteJobStore(tmp_path / "jobs.db").close()
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        SqliteJobStore(tmp_path / "jobs.db")


def test_a_closed_sqlite_store_refuses_work(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.db")
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.counts()


def test_sqlite_stores_opened_at_once_on_a_new_file_all_work(tmp_path, make_job):
    path = tmp_path / "fresh" / "jobs.db"
    start = threading.Barrier(6)

    def open_and_enqueue(_: int) -> SqliteJobStore:
        start.wait()
        store = SqliteJobStore(path)
        store.enqueue(make_job())
        return store

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(open_and_enqueue, range(6)))
    assert stores[0].counts()[JobState.QUEUED] == 6
    for store in stores:
        store.close()


def test_a_sqlite_store_inherited_through_fork_keeps_working(tmp_path, make_job):
    store = SqliteJobStore(tmp_path / "jobs.db")
    store.enqueue(make_job())  # the parent's connection exists before the fork
    child_job = make_job()

    def in_child() -> None:
        store.enqueue(child_job)
        store.close()

    child = multiprocessing.get_context("fork").Process(target=in_child)
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store.get(child_job.id) == child_job
    assert store.counts()[JobState.QUEUED] == 2
    store.close()
