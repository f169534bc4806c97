"""Job stores: the JobStore protocol and its backends (SQLite, the embedded default)."""

from kandinsky_serve.store.protocol import Admission, Heartbeat, JobPage, JobStore
from kandinsky_serve.store.sqlite import SqliteJobStore

__all__ = ["Admission", "Heartbeat", "JobPage", "JobStore", "SqliteJobStore"]
