"""Admission checks for SQLite enqueues: credits, the owner's active jobs, the queue's depth.

Run inside the enqueue's BEGIN IMMEDIATE transaction, so two requests racing for the last credit
or the last queue slot cannot both get it.
"""

from __future__ import annotations

import sqlite3

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import Job
from kandinsky_serve.store.protocol import Admission


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
            raise ServeError(
                ErrorCode.OVERLOADED, "The server is busy (its queue is full); try again shortly.", retry_after=5
            )
    if admission.max_active is not None:
        (active,) = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')", (job.owner,)
        ).fetchone()
        if active >= admission.max_active:
            raise ServeError(
                ErrorCode.RATE_LIMITED,
                f"Too many jobs in flight: this key may have {admission.max_active} queued or running at once.",
                retry_after=2,
            )
    if admission.budget is not None:
        remaining = admission.budget - spent(conn, job.owner)
        if job.price > remaining + 1e-9:
            raise ServeError(
                ErrorCode.INSUFFICIENT_CREDITS,
                f"Insufficient credits: this job costs {job.price:g} and {max(remaining, 0):g} remain.",
            )
