"""How RedisJobStore lays a Job out in keys (see redis_scripts.py), and reads it back.

A job is a hash: its JSON as enqueued (codec format, as SQLite keeps it) and beside it the fields its
life changes, which a read overlays on the JSON. Its request is apart, in p:req:<id>, without its
input images; for a job with images the whole request is in p:inp:<id>, which only a lease reads
and expiry deletes. A record written before p:inp existed has the whole request in p:req: reads drop
its images unread, and a lease, finding no p:inp, takes p:req.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import TypeAdapter

from kandinsky_serve.domain import transitions
from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import Job, JobState, Output
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.domain.transitions import Record
from kandinsky_serve.store.codec import from_micros, load_job, load_request, load_summary, micros

_OUTPUTS = TypeAdapter(list[Output])


@dataclass(frozen=True)
class Read:
    """A job as read for a change: the record, and the version the change is decided on."""

    record: Record  # the job with a placeholder request unless it was read
    version: str
    request: str  # the request JSON as stored; '' unless it was read


@dataclass(frozen=True)
class Change:
    record: Record  # what the job becomes
    request: str = ""  # a new request JSON; '' leaves it unchanged


def read_of(fields: dict[str, str], request: str = "", *, parse_request: bool = True) -> Read:
    """A Read from the job's hash and, if it was read, its p:req (parsed unless parse_request is False)."""
    return Read(read_record(fields, request if request and parse_request else None), fields["v"], request)


def with_request(job: Job, whole: str) -> Job:
    """A leased job with its whole request (p:inp, or p:req where there is none), for its worker."""
    return job.model_copy(update={"request": load_request(whole, data_removed=job.data_removed)})


def apply_args(prefix: str, changes: Sequence[tuple[Read, Change]], *, whole: bool, now: datetime) -> list[str | int]:
    """The ARGV of the APPLY script for changes, each decided on its read, with the webhook
    deliveries each calls for (queued in the same script)."""
    args: list[str | int] = [prefix, int(whole), micros(now)]
    for read, change in changes:
        record = change.record
        fields = [item for pair in live_fields(record.job).items() for item in pair]
        lease = "" if record.lease_expires is None else str(micros(record.lease_expires))
        args += [record.job.id, read.version, record.job.state.value, record.worker or "", lease, change.request]
        args += [len(fields), *fields]
        found = transitions.deliveries(read.record.job, record.job)
        args += [len(found), *(item for d in found for item in (d.key, d.event.value, d.url))]
    return args


def live_fields(job: Job) -> dict[str, str]:
    """The fields of a job that change after its enqueue, as the hash holds them."""
    return {
        "state": job.state.value,
        "attempts": str(job.attempts),
        "started": "" if job.started_at is None else str(micros(job.started_at)),
        "completed": "" if job.completed_at is None else str(micros(job.completed_at)),
        "error_code": json.dumps(None if job.error_code is None else job.error_code.value),
        "error_message": json.dumps(job.error_message),
        "outputs": _OUTPUTS.dump_json(job.outputs).decode(),
        "cancel": str(int(job.cancel_requested)),
        "removed": str(int(job.data_removed)),
    }


def read_job(fields: dict[str, str], request: str | None) -> Job:
    """The job as reads return it, its request (p:req) without input images; with request None, a
    placeholder request (enough for a state transition)."""
    return _job(fields, None if request is None else load_summary(request))


def read_record(fields: dict[str, str], request: str | None) -> Record:
    """The job as read_job() reads it, with its lease (the hash's `worker` and `lease` fields, there
    only while it runs)."""
    return Record(read_job(fields, request), fields.get("worker") or None, _time(fields.get("lease", "")))


def _job(fields: dict[str, str], request: GenerationRequest | None) -> Job:
    job = load_job(fields["job"], request)
    code = json.loads(fields["error_code"])
    update = {
        "state": JobState(fields["state"]),
        "attempts": int(fields["attempts"]),
        "started_at": _time(fields["started"]),
        "completed_at": _time(fields["completed"]),
        "error_code": None if code is None else ErrorCode(code),
        "error_message": json.loads(fields["error_message"]),
        "outputs": _OUTPUTS.validate_json(fields["outputs"]),
        "cancel_requested": fields["cancel"] == "1",
        "data_removed": fields["removed"] == "1",
    }
    return job.model_copy(update=update)


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash from HGETALL's flat list, as a script returns it."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _time(value: str) -> datetime | None:
    return None if value == "" else from_micros(int(value))
