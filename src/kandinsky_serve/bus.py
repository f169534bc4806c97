"""The message bus between API nodes and workers on several machines, over Redis pub/sub.

The messages are the ones a one-machine worker sends its supervisor over a pipe (worker.messages),
as JSON: workers publish what they report on `<prefix>:events` (with who they are), API nodes
publish what they ask (wake, cancel) on `<prefix>:control`. Pub/sub may drop a message when a node
is disconnected; nothing depends on it alone: waiters also re-read the store, workers also poll it,
and heartbeats carry cancel requests.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.worker.messages import (
    BatchDone,
    Cancel,
    JobsChanged,
    Progress,
    StateChanged,
    ToSupervisor,
    ToWorker,
    Wake,
    WorkerState,
)
from kandinsky_serve.worker.relay import Relay

log = logging.getLogger(__name__)

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (StateChanged, JobsChanged, Progress, BatchDone, Wake, Cancel)
}
PRESENCE_SECONDS = 5.0  # workers re-announce their state this often
GONE_SECONDS = 3 * PRESENCE_SECONDS  # a worker not heard from for this long is listed as gone


@dataclass(frozen=True)
class WorkerIdentity:
    id: str
    pid: int
    host: str
    device: str
    model: str = ""  # the id of the model it runs ("" from a worker older than several models)

    @classmethod
    def here(cls, device: str, model: str = "") -> WorkerIdentity:
        host = socket.gethostname()
        return cls(f"{host}-{os.getpid()}-{os.urandom(2).hex()}", os.getpid(), host, device, model)


def encode(message: ToSupervisor | ToWorker) -> dict[str, Any]:
    return {"type": type(message).__name__, **asdict(message)}


def decode(data: dict[str, Any]) -> ToSupervisor | ToWorker:
    fields = dict(data)
    cls = _TYPES[fields.pop("type")]
    if cls is Progress:
        event = fields["event"]
        fields["event"] = ProgressEvent(Stage(event["stage"]), event["step"], event["total"])
        fields["job_ids"] = tuple(fields["job_ids"])
        fields["previews"] = tuple(tuple(pair) for pair in fields.get("previews", ()))
    elif cls is JobsChanged:
        fields["job_ids"] = tuple(fields["job_ids"])
    elif cls is BatchDone:
        fields["job_seconds"] = tuple(fields["job_seconds"])
    elif cls is StateChanged:
        fields["state"] = WorkerState(fields["state"])
    message: ToSupervisor | ToWorker = cls(**fields)
    return message


class RedisBus:
    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self.events_channel = f"{prefix}:events"
        self.control_channel = f"{prefix}:control"

    def report(self, worker: WorkerIdentity, message: ToSupervisor) -> None:
        payload = json.dumps({"worker": asdict(worker), "message": encode(message)})
        try:
            self._redis.publish(self.events_channel, payload)
        except redis.RedisError:
            log.warning("could not publish %s; the store still has the facts", type(message).__name__)

    def ask(self, message: ToWorker) -> None:
        try:
            self._redis.publish(self.control_channel, json.dumps(encode(message)))
        except redis.RedisError:
            log.warning("could not publish %s; workers poll the store", type(message).__name__)

    def listen(self, channel: str, handle: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        """Calls handle with each message on the channel until stop is set, resubscribing after errors."""
        while not stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                while not stop.is_set():
                    item = pubsub.get_message(timeout=1.0)
                    if item is not None and item["type"] == "message":
                        handle(json.loads(item["data"]))
            except (redis.RedisError, OSError):
                log.warning("lost the bus; reconnecting")
                stop.wait(1.0)
            finally:
                pubsub.close()


@dataclass
class _Seen:
    identity: WorkerIdentity
    state: WorkerState
    detail: str
    at: float


class RemoteWorkers:
    """An API node's view of workers on other machines: what they report (relayed as the
    supervisor's pipes are), and a way to reach them."""

    def __init__(self, bus: RedisBus, relay: Relay) -> None:
        self.bus = bus
        self.relay = relay
        self._workers: dict[str, _Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="bus", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def broadcast(self, message: ToWorker) -> None:
        self.bus.ask(message)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [
            {
                "id": seen.identity.id,
                "pid": seen.identity.pid,
                "host": seen.identity.host,
                "device": seen.identity.device,
                "model": seen.identity.model,
                "state": seen.state.value if now - seen.at < GONE_SECONDS else "gone",
                **({"detail": seen.detail} if seen.detail else {}),
            }
            for seen in self._workers.values()
        ]

    def _listen(self) -> None:
        self.bus.listen(self.bus.events_channel, self._handle, self._stop)

    def _handle(self, data: dict[str, Any]) -> None:
        identity = WorkerIdentity(**data["worker"])
        message = decode(data["message"])
        if isinstance(message, Wake | Cancel):
            return  # asked of workers: not for an API node to relay
        seen = self._workers.get(identity.id)
        if seen is None and isinstance(message, StateChanged):  # a worker is listed once it says how it is
            seen = self._workers[identity.id] = _Seen(identity, message.state, message.detail, 0.0)
        if seen is not None:
            seen.identity, seen.at = identity, time.monotonic()
        self.relay(message, seen)
