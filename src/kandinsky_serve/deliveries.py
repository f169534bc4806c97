"""Deliveries: the webhook outbox as the API's sender uses it (the use case beside JobService).

The store writes a delivery with the job change that calls for it (store/outbox.py); a sender on
any API node claims due deliveries, reads the job as it is now, sends it and settles the claim. This
is all a sender may do with the store, so dialects never hold the store itself.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from kandinsky_serve.domain.job import Job
from kandinsky_serve.notify import Notifier
from kandinsky_serve.store.outbox import Claimed
from kandinsky_serve.store.protocol import JobStore

__all__ = ["Claimed", "Deliveries"]


class Deliveries:
    def __init__(self, store: JobStore, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier

    def claim(self, seconds: float) -> Claimed | None:
        """The delivery due longest, this sender's for `seconds`; None when none is due."""
        return self._store.claim(seconds)

    def job(self, claimed: Claimed) -> Job | None:
        """The delivery's job as it is now (the body is rendered from it); None if it is gone."""
        return self._store.get(claimed.job_id)

    def done(self, claimed: Claimed) -> None:
        """Sent, or not worth sending: removed (due again if the job changed since the claim)."""
        self._store.done(claimed)

    def retry(self, claimed: Claimed, at: datetime) -> None:
        self._store.retry(claimed, at)

    def changes(self) -> asyncio.Queue[str]:
        """Ids of jobs that change in this process from now on: a sender looks at once, not at its
        next poll (deliveries queued by other processes wait for the poll)."""
        return self._notifier.subscribe()
