"""Webhook delivery: `start`, `logs`, `output` and `completed` events, signed, the last one retried.

Runs as the dialect's background task, fed by the notifier with the id of every job that changes.
What it has sent lives in memory only: a delivery pending when the process dies is not resent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from fastapi import Request

from kandinsky_serve.api.dialects.replicate.schemas import for_family
from kandinsky_serve.api.dialects.replicate.signing import secret_for, signature
from kandinsky_serve.api.dialects.replicate.translate import prediction
from kandinsky_serve.api.state import AppState
from kandinsky_serve.api.urls import file_url
from kandinsky_serve.domain.job import Job
from kandinsky_serve.net import pinned

log = logging.getLogger(__name__)

EVENTS = ("start", "output", "logs", "completed")
DEFAULT_EVENTS = ("output", "completed")  # Replicate's default: new outputs and completion
# the final event is retried; the last try lands about a minute after completion, as Replicate's does
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
LOGS_INTERVAL = 0.5
FINISHED_MEMORY = 10_000


@dataclass
class _Progress:
    started: bool = False
    log_lines: int = 0
    last_logs: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one job's events go out in order


def request_for(state: AppState, base: str) -> Request:
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


# this API process, as a node of several on one Redis
NODE = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Deliverer:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.progress: defaultdict[str, _Progress] = defaultdict(_Progress)
        self.tasks: set[asyncio.Task[None]] = set()
        # a job is reported terminal more than once (a cancel, then the worker's stop); send once
        self.finished: OrderedDict[str, None] = OrderedDict()

    def _spawn(self, job: Job, url: str, event: str, logs: list[str], lock: asyncio.Lock) -> None:
        task = asyncio.create_task(self._deliver(job, url, event, logs, lock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_change(self, job: Job) -> None:
        meta = job.meta
        url, completed_url = meta.get("webhook"), meta.get("webhook_completed")
        if not url and not completed_url:
            return
        wanted = set(meta.get("webhook_events_filter") or DEFAULT_EVENTS)
        events = await anyio.to_thread.run_sync(self.state.service.store.events, job.id)
        logs = [e.message for e in events if e.message]
        if job.id in self.finished:
            return
        seen = self.progress[job.id]
        if job.state.terminal:
            self.progress.pop(job.id, None)
            self.finished[job.id] = None
            if len(self.finished) > FINISHED_MEMORY:
                self.finished.popitem(last=False)
            if url and "output" in wanted and "completed" not in wanted and job.outputs:
                self._spawn(job, url, "output", logs, seen.lock)
            for target in {t for t in (url if "completed" in wanted else None, completed_url) if t}:
                self._spawn(job, target, "completed", logs, seen.lock)
            return
        if not url:
            return
        if "start" in wanted and not seen.started:
            seen.started = True
            self._spawn(job, url, "start", logs, seen.lock)
        now = time.monotonic()
        if "logs" in wanted and len(logs) > seen.log_lines and now - seen.last_logs >= LOGS_INTERVAL:
            seen.log_lines, seen.last_logs = len(logs), now
            self._spawn(job, url, "logs", logs, seen.lock)

    async def _deliver(self, job: Job, url: str, event: str, logs: list[str], lock: asyncio.Lock) -> None:
        retry = event == "completed"
        async with lock:
            body = await anyio.to_thread.run_sync(self._body, job, logs)
            message_id = f"msg_{job.id}_{event}"  # the same across retries, so receivers can dedupe
            secret = await anyio.to_thread.run_sync(secret_for, self.state.settings, job.owner)
            for delay in (0.0, *RETRY_DELAYS) if retry else (0.0,):
                await asyncio.sleep(delay)
                if await self._send(url, message_id, secret, body):
                    return
            log.warning("webhook %s for prediction %s to %s was not accepted", event, job.id, url)

    def _body(self, job: Job, logs: list[str]) -> bytes:
        base = str(job.meta.get("base_url", ""))
        request = request_for(self.state, base)
        blobs = self.state.service.blobs
        served = for_family(self.state.service.model.family)
        view = prediction(
            job, base=base, file_url=lambda key: file_url(request, key), blobs=blobs, logs=logs, served=served
        )
        return json.dumps(view).encode()

    async def _send(self, url: str, message_id: str, secret: str, body: bytes) -> bool:
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
                    return response.is_success
        except pinned.Refused as exc:
            log.warning("webhook to %s refused: %s", url, exc)
            return True  # retrying cannot help
        except (httpx.HTTPError, TimeoutError) as exc:
            log.info("webhook to %s failed: %s", url, type(exc).__name__)
            return False


def ours(state: AppState, job: Job) -> bool:
    """On Redis every API node hears of every job; the node that accepted a prediction delivers its
    webhooks, so a receiver gets each event once. On one machine every job is ours, also those
    accepted before a restart."""
    return state.settings.store_url is None or job.meta.get("node") in (None, NODE)


async def deliver_webhooks(state: AppState) -> None:
    queue = state.notifier.subscribe()
    # Replicate does not follow redirects when delivering, so neither do we (pinned clients never do)
    deliverer = Deliverer(state)
    try:
        while True:
            job_id = await queue.get()
            job = await anyio.to_thread.run_sync(state.service.store.get, job_id)
            if job is not None and job.meta.get("dialect") == "replicate" and ours(state, job):
                await deliverer.on_change(job)
    finally:
        for task in list(deliverer.tasks):
            task.cancel()
