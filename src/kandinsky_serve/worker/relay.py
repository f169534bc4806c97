"""Relay: what a worker reports, turned into what the API node does about it.

The same for both ways workers reach an API node: a supervisor's pipes (`serve`) and the Redis bus
(`api`, bus.RemoteWorkers). A change of jobs wakes their waiters, a step goes to the live progress,
every message feeds the metrics, and a worker's new state is what the node lists for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kandinsky_serve.notify import Notifier
from kandinsky_serve.worker.messages import JobsChanged, Progress, StateChanged, ToSupervisor, WorkerState


class WorkerRecord(Protocol):
    """What a node keeps about one worker (the supervisor's handle, the bus's last sighting)."""

    state: WorkerState
    detail: str


class Relay:
    def __init__(self, notifier: Notifier, observe: Callable[[ToSupervisor], None] | None = None) -> None:
        self.notifier = notifier
        self.observe = observe  # the metrics

    def __call__(self, message: ToSupervisor, worker: WorkerRecord | None = None) -> None:
        """Relays one message; worker: the record of the worker that sent it, if the node keeps one."""
        if self.observe is not None:
            self.observe(message)
        if isinstance(message, StateChanged):
            if worker is not None:
                worker.state = message.state
                worker.detail = message.detail
        elif isinstance(message, JobsChanged):
            self.notifier.publish(message.job_ids)
        elif isinstance(message, Progress):
            self.notifier.publish_progress(message.job_ids, message.event, message.previews)
