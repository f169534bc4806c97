"""Admission checks for SQLite enqueues: credits, the owner's active jobs, the queue's depth.

Run inside the enqueue's BEGIN IMMEDIATE transaction, so two requests racing for the last credit
or the last queue slot cannot both get it.
"""

from __future__ import annotations

import sqlite3

from kandinsky_serve.domain.job import Job
from kandinsky_serve.store.protocol import Admission, insufficient_credits, queue_full, too_many_in_flight


def spent(conn: sqlite3.Connection, owner: str) -> float:
    row = conn.execute(
        "SELECT COALESCE(SUM(price), 0) FROM jobs WHERE owner = ? AND state IN ('queued', 'running', 'succeeded')",
        (owner,),
    ).fetchone()
    return float(row[0])


def admit(conn: sqlite3.Connection, job: Job, admission: Admission) -> None:
    if admission.max_queued is not None:
        (queued,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()
        if queued >= admission.max_queued:
            raise queue_full()
    if admission.max_active is not None:
        (active,) = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')", (job.owner,)
        ).fetchone()
        if active >= admission.max_active:
            raise too_many_in_flight(admission.max_active)
    if admission.budget is not None:
        remaining = admission.budget - spent(conn, job.owner)
        if job.price > remaining + 1e-9:
            raise insufficient_credits(job.price, remaining)
