"""Outbox: webhook deliveries kept in the store, so that they outlive the process that made them.

A job store writes a delivery in the same transaction as the change of a job that calls for it
(domain/transitions.py `deliveries`: the worker's completion queues `completed` even when no API
process is alive). Any API node drains the outbox: it claims a due delivery for a while (so no
other node sends it meanwhile, and a dead node's claim runs out), sends it, and then marks it done
or due again later. One delivery is pending per (job, event, url): the body is the job as it is when
it is sent, so a change while one is pending only marks it changed (`rev`), and `done` then keeps it
due, so the newer state is sent too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kandinsky_serve.domain.job import WebhookEvent


@dataclass(frozen=True)
class Claimed:
    """A delivery in the hands of one sender until `claimed_until`."""

    key: str
    job_id: str
    event: WebhookEvent
    url: str
    attempts: int  # tries so far, this one included
    created_at: datetime  # when it was first queued
    rev: int  # how often the job changed in a way that called for it again, as claimed
    token: str  # this claim's: done() and retry() of a claim that was lost change nothing
    claimed_until: datetime


class Outbox(Protocol):
    def claim(self, claim_seconds: float) -> Claimed | None:
        """The delivery due longest (due at or before now), claimed for claim_seconds; None if none is
        due. While claimed it is not due; a claim that runs out makes it due again."""
        ...

    def done(self, claimed: Claimed) -> None:
        """Sent (or given up): removed, unless it was queued again since the claim (then due now).
        Nothing if the claim was lost."""
        ...

    def retry(self, claimed: Claimed, at: datetime) -> None:
        """Not sent: due again at `at`. Nothing if the claim was lost."""
        ...

    def pending(self) -> int:
        """How many deliveries the outbox holds, claimed or not."""
        ...
