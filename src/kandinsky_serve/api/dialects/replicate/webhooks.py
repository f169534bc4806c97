"""Webhook delivery: `start`, `logs`, `output` and `completed` events, signed, the last one retried.

What to send is data in the store, not memory of the process that accepted the prediction: every
change of a job with webhooks writes the deliveries it calls for to the store's outbox in the same
transaction (domain/transitions.py `deliveries`; the worker's completion writes `completed` even when
no API process is alive). Every API node drains the outbox as the dialect's background task: it
claims a due delivery for a while (no other node sends it meanwhile, and the claim of a node that
died runs out), renders the prediction as it is then, sends it, and marks it done, or due again
later for a `completed` that was not accepted. A receiver may get an event twice (a node that died
after sending and before marking it done), never a `completed` not at all while it keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from enum import Enum
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from fastapi import Request

from kandinsky_serve.api.dialects.replicate.schemas import for_family
from kandinsky_serve.api.dialects.replicate.signing import secret_for, signature
from kandinsky_serve.api.dialects.replicate.translate import prediction
from kandinsky_serve.api.urls import file_url
from kandinsky_serve.deliveries import Claimed
from kandinsky_serve.domain.errors import invalid
from kandinsky_serve.domain.job import Job, Webhook, WebhookEvent, utcnow
from kandinsky_serve.domain.meta import ReplicateMeta
from kandinsky_serve.net import pinned
from kandinsky_serve.runtime import Runtime

log = logging.getLogger(__name__)

EVENTS = tuple(event.value for event in WebhookEvent)
DEFAULT_EVENTS = frozenset({WebhookEvent.OUTPUT, WebhookEvent.COMPLETED})  # Replicate's: outputs, completion
# `completed` is retried with exponential backoff from 1 s up to 5 min, and given up after a day
FIRST_RETRY = 1.0
MAX_RETRY = 300.0
GIVE_UP_AFTER = timedelta(hours=24)
MAX_ATTEMPTS = 300  # about a day at the longest interval
POLL_SECONDS = 1.0  # a look at the outbox without news: retries come due, other nodes' changes
CONCURRENCY = 16  # deliveries in flight per node


def subscriptions(body: dict[str, Any], check_url: Callable[[str, str], None]) -> tuple[Webhook, ...]:
    """The webhooks a create-prediction body asks for; check_url(url, field) refuses a URL."""
    events = body.get("webhook_events_filter")
    wanted = DEFAULT_EVENTS
    if events is not None:
        if not isinstance(events, list) or any(e not in EVENTS for e in events):
            raise invalid("webhook_events_filter", f"must be a list of {', '.join(EVENTS)}")
        wanted = frozenset(WebhookEvent(e) for e in events)
    hooks = []
    for name in ("webhook", "webhook_completed"):
        url = body.get(name)
        if url:
            check_url(str(url), name)
            # webhook_completed (replicate-python's): told of completion only
            hooks.append(
                Webhook(url=str(url), events=wanted if name == "webhook" else frozenset({WebhookEvent.COMPLETED}))
            )
    return tuple(hooks)


def request_for(state: Runtime, base: str) -> Request:
    """A stand-in for the request that created the job, so output URLs are built the one way
    `api.urls` builds them, long after that request is gone."""
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "app": SimpleNamespace(state=SimpleNamespace(ks=state)),
        "scheme": parts.scheme,
        "server": (parts.hostname or "localhost", port),
        "root_path": parts.path.rstrip("/"),
        "path": parts.path.rstrip("/") + "/",
        "query_string": b"",
        "headers": [(b"host", parts.netloc.encode())],
    }
    return Request(scope)


class _Sent(Enum):
    ACCEPTED = "accepted"
    FAILED = "failed"  # no answer, or not a 2xx: worth another try
    REFUSED = "refused"  # the URL may not be fetched: no try can help


def retry_delay(attempts: int) -> float:
    """Seconds before the next try of a `completed` tried `attempts` times: 1, 2, 4, ... 300."""
    return float(min(FIRST_RETRY * 2 ** (attempts - 1), MAX_RETRY))


class Deliverer:
    def __init__(self, state: Runtime) -> None:
        self.state = state
        self.outbox = state.deliveries
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(CONCURRENCY)
        # one job's events go out in order from this node (start before completed)
        self.locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def claim_seconds(self) -> float:
        # a claim outlives the longest try (a try is cut at the fetch timeout), so no other node
        # takes a delivery that is still being sent
        return self.state.settings.fetch_timeout_seconds + 30.0

    async def drain(self) -> None:
        """Claims and starts every delivery due now (CONCURRENCY at a time)."""
        while True:
            await self.slots.acquire()
            try:
                claimed = await anyio.to_thread.run_sync(self.outbox.claim, self.claim_seconds)
            except BaseException:
                self.slots.release()
                raise
            if claimed is None:
                self.slots.release()
                return
            lock = self.locks.get(claimed.job_id)
            if lock is None:
                lock = self.locks[claimed.job_id] = asyncio.Lock()
            task = asyncio.create_task(self._deliver(claimed, lock))
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("webhook delivery failed", exc_info=error)

    async def _deliver(self, claimed: Claimed, lock: asyncio.Lock) -> None:
        async with lock:
            job = await anyio.to_thread.run_sync(self.outbox.job, claimed)
            if job is None or self._superseded(job, claimed):
                await anyio.to_thread.run_sync(self.outbox.done, claimed)
                return
            body = await anyio.to_thread.run_sync(self._body, job)
            secret = await anyio.to_thread.run_sync(secret_for, self.state.settings, job.owner)
            message_id = f"msg_{job.id}_{claimed.event.value}"  # the same across retries: receivers dedupe
            sent = await self._send(claimed.url, message_id, secret, body)
            await anyio.to_thread.run_sync(self._settle, claimed, sent)

    @staticmethod
    def _superseded(job: Job, claimed: Claimed) -> bool:
        """An intermediate event of a job that has ended, for a webhook that is told of the end: the
        `completed` it gets says all (and rendered now it would read as finished anyway)."""
        if claimed.event is WebhookEvent.COMPLETED or not job.state.terminal:
            return False
        return any(hook.url == claimed.url and WebhookEvent.COMPLETED in hook.events for hook in job.webhooks)

    def _settle(self, claimed: Claimed, sent: _Sent) -> None:
        # intermediate events are never retried (Replicate's rule); `completed` is, until a day passes
        age = utcnow() - claimed.created_at
        if sent is _Sent.FAILED and claimed.event is WebhookEvent.COMPLETED:
            if claimed.attempts < MAX_ATTEMPTS and age < GIVE_UP_AFTER:
                self.outbox.retry(claimed, utcnow() + timedelta(seconds=retry_delay(claimed.attempts)))
                return
            log.warning(
                "webhook completed for prediction %s to %s given up after %d tries",
                claimed.job_id,
                claimed.url,
                claimed.attempts,
                extra={"job_ids": [claimed.job_id]},
            )
        elif sent is _Sent.FAILED:
            log.info(
                "webhook %s for prediction %s to %s was not accepted", claimed.event.value, claimed.job_id, claimed.url
            )
        self.outbox.done(claimed)

    def _body(self, job: Job) -> bytes:
        service = self.state.service
        base = job.meta.base_url if isinstance(job.meta, ReplicateMeta) else ""
        request = request_for(self.state, base)
        served = for_family(service.family_of(job.request.model))
        view = prediction(
            job,
            base=base,
            file_url=lambda key: file_url(request, key),
            blobs=service.reader,
            logs=service.logs(job.id),
            served=served,
        )
        return json.dumps(view).encode()

    async def _send(self, url: str, message_id: str, secret: str, body: bytes) -> _Sent:
        settings = self.state.settings
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(secret, message_id, stamp, body),
        }
        try:
            with anyio.fail_after(settings.fetch_timeout_seconds):
                # resolved and checked at every delivery (the name may point elsewhere now than when it
                # was given), and sent to the address checked, never to a second lookup of the name
                to = await pinned.target(url, settings.allow_private_urls)
                async with (
                    pinned.client(settings.fetch_timeout_seconds) as http,
                    pinned.stream(http, "POST", to, headers=headers, content=body) as response,
                ):
                    return _Sent.ACCEPTED if response.is_success else _Sent.FAILED
        except pinned.Refused as exc:
            log.warning("webhook to %s refused: %s", url, exc)
            return _Sent.REFUSED
        except (httpx.HTTPError, TimeoutError) as exc:
            log.info("webhook to %s failed: %s", url, type(exc).__name__)
            return _Sent.FAILED


async def deliver_webhooks(state: Runtime) -> None:
    """Drains the outbox for the server's lifetime: at once when a job changes here, and every
    POLL_SECONDS for retries that come due and deliveries other processes queued."""
    changes = state.deliveries.changes()
    # Replicate does not follow redirects when delivering, so neither do we (pinned clients never do)
    deliverer = Deliverer(state)
    try:
        while True:
            try:
                await deliverer.drain()
            except Exception:  # the store is unreachable for now: the next look tries again
                log.exception("could not read the webhook outbox")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.get(), POLL_SECONDS)
            while not changes.empty():  # one look serves every change so far
                changes.get_nowait()
    finally:
        for task in list(deliverer.tasks):
            task.cancel()
