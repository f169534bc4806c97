"""How job stores keep a Job as JSON: in parts, so that reading a job never loads its input images.

The request is stored twice over, apart from the rest of the job: without its input images, which
is what every read (get, list, cancel) returns, and whole, only for a job that has images, in an
inputs place that only `lease` reads (the worker needs the pictures) and expiry deletes. A status
read of a job with an 18 MiB image then parses a few hundred bytes, not the image. The many small
changes of a job's life rewrite neither. Any backend (SQLite, Redis) can use these functions and stay
compatible with the others' data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import FuseItem, GenerationRequest, Task

# stands in for the request while a transition edits the rest of a job; never stored
_NO_REQUEST = GenerationRequest.model_construct()


def job_json(job: Job) -> str:
    """The job without its request."""
    return job.model_dump_json(exclude={"request"})


def load_job(text: str, request: GenerationRequest | None = None) -> Job:
    """The job from job_json(); without `request`, a placeholder request that must not be used,
    which is all a state transition needs."""
    # the request goes in after validation: Job's validation would run the request's validators
    # again, which refuse a request whose images are left out
    job = Job.model_validate({**json.loads(text), "request": _NO_REQUEST})
    return job if request is None else job.model_copy(update={"request": request})


def has_inputs(request: GenerationRequest) -> bool:
    return any(part is not None for part in (request.image, request.mask, request.hint)) or any(
        item.image is not None for item in request.fuse
    )


def without_inputs(request: GenerationRequest) -> GenerationRequest:
    """The request as reads return it: no image, mask, hint or fuse image; a fuse item that was an
    image is left with neither prompt nor image (constructed: validation would refuse it)."""
    fuse = tuple(
        FuseItem.model_construct(prompt=None, image=None, weight=item.weight) if item.image is not None else item
        for item in request.fuse
    )
    return request.model_copy(update={"image": None, "mask": None, "hint": None, "fuse": fuse})


def split_request(request: GenerationRequest) -> tuple[str, str | None]:
    """What a store writes at enqueue: the request JSON without its input images, and the whole
    request JSON for the inputs place (None for a job without images, which needs no such place)."""
    if not has_inputs(request):
        return request.model_dump_json(), None
    return without_inputs(request).model_dump_json(), request.model_dump_json()


def split_stored(text: str) -> tuple[str, str | None]:
    """split_request() for a request JSON stored whole by an earlier layout."""
    data = json.loads(text)
    stripped = _stripped(data)
    return (json.dumps(stripped), text) if stripped != data else (text, None)


def load_request(text: str, *, data_removed: bool) -> GenerationRequest:
    """A whole request from its JSON, as a worker runs it. Once expiry removed its images the
    validators would demand them back, so it is read as load_summary() reads it."""
    if not data_removed:
        return GenerationRequest.model_validate_json(text)
    return load_summary(text)


def load_summary(text: str) -> GenerationRequest:
    """The request without its input images, from its JSON with or without them (a record of an
    earlier layout still holds them: they are dropped unread, never base64- or image-decoded).
    Without its images an img2img would fail validation, so the rest is validated as a text2img
    and the task restored."""
    data = _stripped(json.loads(text))
    fuse = tuple(
        FuseItem.model_validate(item) if item["prompt"] is not None else FuseItem.model_construct(**item)
        for item in data.pop("fuse")
    )
    checked = GenerationRequest.model_validate({**data, "task": Task.TEXT2IMG.value})
    return checked.model_copy(update={"task": Task(data["task"]), "fuse": fuse})


def strip_request(text: str) -> str:
    """The request JSON without its input images. Fuse items keep their place and weight, and one that
    was an image is left with neither prompt nor image."""
    return json.dumps(_stripped(json.loads(text)))


def _stripped(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "image": None,
        "mask": None,
        "hint": None,
        "fuse": [{**item, "image": None} for item in data.get("fuse", ())],
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, how both stores keep times: exact integers sort right where float
    seconds could tie or drift."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are UTC throughout kandinsky_serve
    return (moment - _EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
