"""The SQLite job database's layout and connection settings, and the migrations that create it.

`PRAGMA user_version` records the layout; a later version adds its step to `_STEPS` and bumps
SCHEMA_VERSION. Times are integer microseconds since the epoch (UTC), which sort exactly.

Version 2 keeps a job's input images apart from the request that reads return (see codec.py).
Version 3 adds the jobs' deadlines (`cancel_at`) and the webhook outbox (store/outbox.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from kandinsky_serve.store.codec import split_stored

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 5000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint

_SCHEMA_V1 = (
    # the job's columns serve the queries; `job` is the Job itself as JSON, without its request
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        batch_key TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        lease_expires INTEGER,
        worker TEXT,
        attempts INTEGER NOT NULL,
        completed_at INTEGER,
        data_removed INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL,
        price REAL NOT NULL DEFAULT 0,
        job TEXT NOT NULL
    )""",
    # apart from the job row, so that the job's frequent updates never rewrite the request's images;
    # since version 2 without its images
    "CREATE TABLE requests (job_id TEXT PRIMARY KEY, request TEXT NOT NULL)",
    "CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (job_id, seq))",
    "CREATE INDEX jobs_by_owner ON jobs (owner, created_at, id)",
    "CREATE INDEX jobs_by_state ON jobs (state)",
    "CREATE INDEX jobs_active_by_owner ON jobs (owner) WHERE state IN ('queued', 'running')",
    # partial indexes: the store's queries name these states literally so that the planner uses them
    "CREATE INDEX jobs_queued ON jobs (created_at, id) WHERE state = 'queued'",
    "CREATE INDEX jobs_queued_by_batch ON jobs (batch_key, created_at, id) WHERE state = 'queued'",
    "CREATE INDEX jobs_leases ON jobs (lease_expires) WHERE state = 'running'",
    "CREATE INDEX jobs_expirable ON jobs (completed_at) WHERE data_removed = 0 AND completed_at IS NOT NULL",
)


def _create_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


def _to_v2(conn: sqlite3.Connection) -> None:
    """The whole request of a job with input images, which only a lease reads, moves to `inputs`;
    `requests` keeps it without them, so that reads never load an image."""
    conn.execute("CREATE TABLE inputs (job_id TEXT PRIMARY KEY, request TEXT NOT NULL)")
    # one request in memory at a time: they may be tens of megabytes each; expired ones hold no images
    ids = [row[0] for row in conn.execute("SELECT id FROM jobs WHERE data_removed = 0").fetchall()]
    for job_id in ids:
        row = conn.execute("SELECT request FROM requests WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            continue
        request, inputs = split_stored(row[0])
        if inputs is not None:
            conn.execute("INSERT INTO inputs (job_id, request) VALUES (?, ?)", (job_id, inputs))
            conn.execute("UPDATE requests SET request = ? WHERE job_id = ?", (request, job_id))


def _to_v3(conn: sqlite3.Connection) -> None:
    """Deadlines and the webhook outbox. Jobs stored before had neither: cancel_at stays NULL."""
    conn.execute("ALTER TABLE jobs ADD COLUMN cancel_at INTEGER")
    # only the jobs a deadline may still cancel: the janitor's look is one range of this index
    conn.execute(
        """CREATE INDEX jobs_deadlines ON jobs (cancel_at)
        WHERE cancel_at IS NOT NULL AND cancel_requested = 0 AND state IN ('queued', 'running')"""
    )
    # the rowid orders deliveries due at the same moment in the order they were queued (an index
    # ends with the rowid, so outbox_due serves ORDER BY due, rowid)
    conn.execute(
        """CREATE TABLE outbox (
            key TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            created INTEGER NOT NULL,
            due INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            rev INTEGER NOT NULL,
            token TEXT
        )"""
    )
    conn.execute("CREATE INDEX outbox_due ON outbox (due)")


# _STEPS[n] takes a database from version n - 1 to version n
_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1, 2: _to_v2, 3: _to_v3}


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the store's settings; the file must already be in WAL mode (see `migrate`)."""
    # isolation_level=None: the sqlite3 module's implicit transactions are DEFERRED, so the store
    # issues its own; check_same_thread=False only so that close() can close other threads' connections
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # NORMAL: in WAL mode a commit survives the process dying at any point, and only a power loss can
    # take back the last commits. The writes a caller is told are stored (enqueue, cancel) switch to
    # FULL for their transaction (SqliteJobStore._write); a worker's lost lease, event or completion
    # is redone after a power loss, and the job, with its fixed seed, makes the same images again.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    return conn


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Switches the file to WAL and creates or upgrades the tables, in one transaction; safe when
    several processes open it at once."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"{path} cannot use write-ahead logging (journal mode {mode}); use a file on a local disk")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} has schema version {version}, newer than this kandinsky-serve's {SCHEMA_VERSION}; upgrade it"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            _STEPS[step](conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def pragmas(conn: sqlite3.Connection) -> dict[str, str | int]:
    """The durability settings in force on a connection, for startup logs and `doctor`."""
    synchronous = {0: "off", 1: "normal", 2: "full", 3: "extra"}
    return {
        "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
        "synchronous": synchronous[int(conn.execute("PRAGMA synchronous").fetchone()[0])],
        "busy_timeout_ms": int(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
        "schema_version": int(conn.execute("PRAGMA user_version").fetchone()[0]),
    }
