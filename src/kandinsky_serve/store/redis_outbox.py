"""The outbox and the deadlines in Redis (keys p:outbox, p:dlv:<key> and p:deadlines, see
redis_scripts.py). APPLY queues deliveries in the script that changes the job; these are the
outbox's own scripts, and the look for jobs past their deadline."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta

import redis

from kandinsky_serve.domain import transitions
from kandinsky_serve.domain.job import WebhookEvent
from kandinsky_serve.redis_server import untyped
from kandinsky_serve.store import redis_scripts as scripts
from kandinsky_serve.store.codec import from_micros, micros
from kandinsky_serve.store.outbox import Claimed
from kandinsky_serve.store.redis_records import pairs, read_of

_CHUNK = 100


class RedisOutbox:
    """The Outbox protocol and JobStore.overdue, for RedisJobStore (which opens the connection)."""

    _redis: redis.Redis
    _p: str
    _clock: Callable[[], datetime]

    def _open_outbox(self) -> None:
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._done = self._redis.register_script(scripts.DONE)
        self._retry = self._redis.register_script(scripts.RETRY)

    def claim(self, claim_seconds: float) -> Claimed | None:
        now = self._clock()
        until = now + timedelta(seconds=claim_seconds)
        token = os.urandom(8).hex()
        reply = untyped(self._claim(args=[self._p, micros(now), micros(until), token]))
        if not reply:
            return None
        fields = pairs(reply)
        return Claimed(
            key=fields["key"],
            job_id=fields["job"],
            event=WebhookEvent(fields["event"]),
            url=fields["url"],
            attempts=int(fields["attempts"]),
            created_at=from_micros(int(fields["created"])),
            rev=int(fields["rev"]),
            token=token,
            claimed_until=until,
        )

    def done(self, claimed: Claimed) -> None:
        self._done(args=[self._p, claimed.key, claimed.token, str(claimed.rev), micros(self._clock())])

    def retry(self, claimed: Claimed, at: datetime) -> None:
        self._retry(args=[self._p, claimed.key, claimed.token, micros(at)])

    def pending(self) -> int:
        return int(untyped(self._redis.zcard(f"{self._p}outbox")))

    def overdue(self) -> list[str]:
        """p:deadlines chooses them (the scripts keep only jobs a cancel would change there),
        transitions.overdue decides."""
        now = self._clock()
        ids = untyped(self._redis.zrangebyscore(f"{self._p}deadlines", "-inf", micros(now), start=0, num=_CHUNK))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"{self._p}job:{job_id}")
        found = []
        for job_id, fields in zip(ids, pipe.execute(), strict=True):
            if fields and transitions.overdue(read_of(fields).record.job, now):
                found.append(job_id)
        return found
