"""Worker entry points: load the model once, then run the work loop.

Two ways in: a child of the one-machine supervisor, talking over a pipe (`serve`), or a process of
its own on a GPU machine, talking over the Redis bus (`kandinsky-serve worker`). SIGTERM drains
(finish or give back the running batch, take no more). A model that cannot load is fatal: the
process exits with FATAL_EXIT and a supervisor does not restart it in a loop.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.engine import warmup
from kandinsky_serve.logs import configure as configure_logs
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.factory import open_blobs, open_store
from kandinsky_serve.worker.messages import Cancel, StateChanged, ToSupervisor, ToWorker, Wake, WorkerState
from kandinsky_serve.worker.runner import Runner

if TYPE_CHECKING:
    from kandinsky_serve.engine.engine import Engine

log = logging.getLogger(__name__)

FATAL_EXIT = 3

Emit = Callable[[ToSupervisor], None]
Listen = Callable[[Runner], None]  # feeds the runner what the API asks, until the link ends


def run_worker(settings: Settings, worker_id: str, device: str, model: str, emit: Emit, listen: Listen) -> None:
    """Loads `model` (one of the served models; each worker runs one) and leases only its jobs."""
    emit(StateChanged(WorkerState.STARTING, device))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # until the model is loaded, just stop
    try:
        from kandinsky_serve.engine.engine import Engine
        from kandinsky_serve.engine.speed import EngineOptions

        engine = Engine.create(model, device, settings.dtype, EngineOptions.from_settings(settings))
        buckets = warmup.plan(settings, engine)
    except ServeError as error:
        emit(StateChanged(WorkerState.DEFUNCT, device, error.message))
        sys.exit(FATAL_EXIT)
    _warm_up(engine, buckets, device, emit)

    store, blobs = open_store(settings), open_blobs(settings)
    # jobs carry the model's canonical id (JobService.served), which is the engine's
    runner = Runner(worker_id, settings, store, blobs, engine, emit, device, models=[engine.spec.id])

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        # The handler runs on the main thread between two bytecodes, possibly while that thread holds
        # the pipe's send lock mid-message; draining (which sends) from here could deadlock.
        threading.Thread(target=runner.drain, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=listen, args=(runner,), name="listen", daemon=True).start()
    runner.run_forever()


def _warm_up(engine: Engine, buckets: list[warmup.Bucket], device: str, emit: Emit) -> None:
    """Runs the buckets before the runner reports ready; one that fails (out of memory) is logged and
    skipped: requests of that shape will say why themselves."""
    for index, bucket in enumerate(buckets):
        emit(StateChanged(WorkerState.WARMING, device, f"{bucket} ({index + 1} of {len(buckets)})"))
        try:
            seconds = warmup.warm_up(engine, [bucket])
        except ServeError as error:
            log.warning("warm-up of %s failed: %s", bucket, error.message)
            continue
        log.info("warmed %s in %.1f s", bucket, seconds)


def needs_store_url(command: str) -> ServeError:
    return ServeError(
        ErrorCode.INVALID_INPUT,
        f"kandinsky-serve {command} needs KS_STORE_URL (or --store-url), e.g. redis://host:6379/0: API nodes and "
        "workers on their own share a Redis; on one machine, use kandinsky-serve serve",
        field="store_url",
    )


def deliver(message: ToWorker, runner: Runner) -> None:
    if isinstance(message, Wake):
        runner.wake()
    elif isinstance(message, Cancel):
        runner.cancel(message.job_id)


# --- a child of the supervisor ----------------------------------------------------------------


def worker_main(settings_json: str, worker_id: str, device: str, model: str, conn: Connection) -> None:
    settings = Settings.model_validate_json(settings_json)
    configure_logs(settings.log_format, f"worker {worker_id}")
    send_lock = threading.Lock()

    def emit(message: ToSupervisor) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (BrokenPipeError, OSError):
                pass  # the supervisor is gone; the reader notices and drains

    def listen(runner: Runner) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                runner.drain()  # the supervisor died: finish up and leave
                return
            deliver(message, runner)

    run_worker(settings, worker_id, device, model, emit, listen)


# --- a worker of its own, on the Redis bus ------------------------------------------------------


def standalone_main(settings: Settings, device: str, model: str) -> None:
    from kandinsky_serve.bus import PRESENCE_SECONDS, RedisBus, WorkerIdentity, decode
    from kandinsky_serve.domain.catalogue import resolve

    if settings.store_url is None:
        raise needs_store_url("worker")
    bus = RedisBus(settings.store_url, settings.redis_prefix)
    identity = WorkerIdentity.here(device, resolve(model).id)
    configure_logs(settings.log_format, f"worker {identity.id}")
    last_state: list[StateChanged] = [StateChanged(WorkerState.STARTING, device)]
    stop = threading.Event()

    def emit(message: ToSupervisor) -> None:
        if isinstance(message, StateChanged):
            last_state[0] = message
        bus.report(identity, message)

    def announce() -> None:
        while not stop.wait(PRESENCE_SECONDS):
            bus.report(identity, last_state[0])

    def listen(runner: Runner) -> None:
        def handle(data: dict[str, object]) -> None:
            message = decode(data)
            if isinstance(message, Wake | Cancel):
                deliver(message, runner)

        bus.listen(bus.control_channel, handle, stop)

    threading.Thread(target=announce, name="presence", daemon=True).start()
    try:
        run_worker(settings, identity.id, device, model, emit, listen)
    finally:
        stop.set()
