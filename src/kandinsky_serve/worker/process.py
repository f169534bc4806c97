"""The entry point of a worker process: load the model once, then run the work loop.

SIGTERM drains (finish or give back the running batch, take no more). A model that cannot load
is fatal: the process exits with FATAL_EXIT and the supervisor does not restart it in a loop.
"""

from __future__ import annotations

import signal
import sys
import threading
from multiprocessing.connection import Connection
from types import FrameType

from kandinsky_serve.domain.errors import ServeError
from kandinsky_serve.logs import configure as configure_logs
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.factory import open_blobs, open_store
from kandinsky_serve.worker.messages import Cancel, StateChanged, ToSupervisor, Wake, WorkerState
from kandinsky_serve.worker.runner import Runner

FATAL_EXIT = 3


def worker_main(settings_json: str, worker_id: str, device: str, conn: Connection) -> None:
    settings = Settings.model_validate_json(settings_json)
    configure_logs(settings.log_format, f"worker {worker_id}")
    send_lock = threading.Lock()

    def emit(message: ToSupervisor) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (BrokenPipeError, OSError):
                pass  # the supervisor is gone; the reader below notices and drains

    emit(StateChanged(WorkerState.STARTING, device))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # until the model is loaded, just stop
    try:
        from kandinsky_serve.engine.engine import Engine

        engine = Engine.create(settings.model, device, settings.dtype)
    except ServeError as error:
        emit(StateChanged(WorkerState.DEFUNCT, device, error.message))
        sys.exit(FATAL_EXIT)

    runner = Runner(worker_id, settings, open_store(settings), open_blobs(settings), engine, emit, device)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        # The handler runs on the main thread between two bytecodes, possibly while that thread holds
        # the pipe's send lock mid-message; draining (which sends) from here could deadlock.
        threading.Thread(target=runner.drain, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    threading.Thread(target=_read, args=(conn, runner), daemon=True).start()
    runner.run_forever()


def _read(conn: Connection, runner: Runner) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            runner.drain()  # the supervisor died: finish up and leave
            return
        if isinstance(message, Wake):
            runner.wake()
        elif isinstance(message, Cancel):
            runner.cancel(message.job_id)
