"""Supervisor: runs one worker process per device for each served model, restarts the ones that die,
drains on stop. Workers of different models share the machine (and, on a GPU, the device).

It lives in the serving process and relays what workers report (jobs changed, live progress) to
the API through a Relay (the one the Redis bus uses too), and what the API wants (wake up, cancel)
to the workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from kandinsky_serve.domain.catalogue import served
from kandinsky_serve.settings import Settings
from kandinsky_serve.worker.messages import ToWorker, WorkerState
from kandinsky_serve.worker.process import FATAL_EXIT, worker_main
from kandinsky_serve.worker.relay import Relay

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0


@dataclass
class WorkerHandle:
    index: int
    device: str
    model: str  # the model's id (the catalogue's), which its jobs carry
    process: BaseProcess
    conn: Connection
    worker_id: str
    state: WorkerState = WorkerState.STARTING
    detail: str = ""
    restarts: int = 0
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: ToWorker) -> None:
        with self.send_lock:
            try:
                self.conn.send(message)
            except (BrokenPipeError, OSError):
                pass  # it died; the watcher restarts it


def worker_devices(settings: Settings) -> list[str]:
    if settings.device != "auto":
        return [settings.device] * max(settings.workers, 1)
    import torch

    gpus = torch.cuda.device_count()
    if gpus:
        return [f"cuda:{i}" for i in range(gpus)][: settings.workers or gpus]
    return ["cpu"] * max(settings.workers, 1)


class Supervisor:
    def __init__(self, settings: Settings, relay: Relay) -> None:
        self.settings = settings
        self.relay = relay
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited CUDA state
        self._workers: list[WorkerHandle] = []
        self._stopping = threading.Event()  # no more restarts
        self._stopped = threading.Event()  # every worker has exited: stop reading their pipes
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        places = [
            (device, entry.id)
            for entry in served(self.settings.served_models)
            for device in worker_devices(self.settings)
        ]
        self._workers = [self._spawn(i, device, model) for i, (device, model) in enumerate(places)]
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def _spawn(self, index: int, device: str, model: str, restarts: int = 0) -> WorkerHandle:
        parent, child = self._context.Pipe()
        worker_id = f"w{index}-{os.urandom(4).hex()}"
        process = self._context.Process(
            target=worker_main,
            args=(self.settings.model_dump_json(), worker_id, device, model, child),
            name=f"kandinsky-worker-{index}",
            daemon=False,
        )
        process.start()
        child.close()
        log.info("worker %s for %s started on %s (pid %s)", worker_id, model, device, process.pid)
        return WorkerHandle(index, device, model, process, parent, worker_id, restarts=restarts)

    def broadcast(self, message: ToWorker) -> None:
        for handle in list(self._workers):
            handle.send(message)

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "id": h.worker_id,
                "pid": h.process.pid,
                "device": h.device,
                "model": h.model,
                "state": h.state.value,
                "restarts": h.restarts,
                **({"detail": h.detail} if h.detail else {}),
            }
            for h in self._workers
        ]

    def _watch(self) -> None:
        restart_at: dict[int, float] = {}
        # reading goes on while workers drain: a worker whose pipe is full blocks on its next
        # progress message and never finishes the batch it was given time to finish
        while not self._stopped.is_set():
            by_conn = {h.conn: h for h in self._workers if h.state is not WorkerState.DEFUNCT}
            by_sentinel = {h.process.sentinel: h for h in self._workers if h.state is not WorkerState.DEFUNCT}
            for ready in wait([*by_conn, *by_sentinel], timeout=0.5):
                if ready in by_conn:
                    self._receive(by_conn[ready])
                elif isinstance(ready, int) and ready in by_sentinel:
                    self._died(by_sentinel[ready], restart_at)
            now = time.monotonic()
            for index, when in list(restart_at.items()):
                if when <= now and not self._stopping.is_set():
                    del restart_at[index]
                    old = self._workers[index]
                    self._workers[index] = self._spawn(index, old.device, old.model, old.restarts + 1)

    def _receive(self, handle: WorkerHandle) -> None:
        try:
            message = handle.conn.recv()
        except (EOFError, OSError):
            return  # the sentinel reports the exit
        self.relay(message, handle)

    def _died(self, handle: WorkerHandle, restart_at: dict[int, float]) -> None:
        handle.process.join(timeout=1)
        code = handle.process.exitcode
        handle.state = WorkerState.DEFUNCT
        handle.conn.close()
        if self._stopping.is_set():
            return
        if code == FATAL_EXIT:
            log.error("worker %s cannot start: %s", handle.worker_id, handle.detail or "model failed to load")
            return
        delay = min(2.0**handle.restarts, _MAX_BACKOFF) if handle.restarts else 0.0
        log.warning("worker %s exited with %s; restarting in %.0f s", handle.worker_id, code, delay)
        restart_at[handle.index] = time.monotonic() + delay

    def stop(self) -> None:
        """SIGTERM every worker (they drain), wait for them, then kill what is left."""
        self._stopping.set()
        for handle in self._workers:
            if handle.process.is_alive():
                handle.process.terminate()
        deadline = time.monotonic() + self.settings.drain_seconds + 10
        for handle in self._workers:
            handle.process.join(timeout=max(deadline - time.monotonic(), 0.1))
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join(timeout=5)
        self._stopped.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
