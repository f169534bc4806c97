"""Replicate inputs and headers in, canonical request out; canonical job in, prediction object out."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from kandinsky_serve.api.dialects.replicate.schemas import LIMITS, LIMITS_21, ReplicateModel
from kandinsky_serve.api.inputs import LocalFiles, image_bytes
from kandinsky_serve.domain.catalogue import Family
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.meta import ReplicateMeta
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.service import BlobReader
from kandinsky_serve.settings import Settings

MAX_WAIT = 60
_TASKS_21 = {"text2img": Task.TEXT2IMG, "text_guided_img2img": Task.IMG2IMG}
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s?)?$")
_TASK_NAMES_21 = {task: name for name, task in _TASKS_21.items()}
_STATUS = {
    JobState.QUEUED: "starting",
    JobState.RUNNING: "processing",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELED: "canceled",
}


def renamed(error: ServeError, model: ReplicateModel) -> ServeError:
    """The input error naming the Replicate input the caller sent (`input.num_outputs`), not the
    canonical field; other errors are shown as they are."""
    return model.fields.renamed(error) if error.code is ErrorCode.INVALID_INPUT else error


class Delivery(StrEnum):
    """How a prediction writes its files in `output`, fixed when it is created and kept for every read."""

    URLS = "urls"
    DATA_URIS = "data_uris"

    @classmethod
    def for_create(cls, wait: int | None, base: str) -> Delivery:
        """Sync (`Prefer: wait`) predictions on a server reached over plain http carry data URIs:
        replicate-python wraps only `https:` and `data:` strings in FileOutput, so `run(...)[0].read()`
        works there only with data URIs (which Replicate's sync API also sent for a while). On every
        later read too: when the wait runs out, `run()` gets its output from polling GET."""
        return cls.DATA_URIS if wait is not None and base.startswith("http:") else cls.URLS

    @classmethod
    def of(cls, job: Job) -> Delivery:
        try:
            return cls(job.meta.delivery) if isinstance(job.meta, ReplicateMeta) else cls.URLS
        except ValueError:
            return cls.URLS


def to_request(
    model: ReplicateModel, raw: Any, settings: Settings, local: LocalFiles | None = None
) -> GenerationRequest:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise invalid("input", "must be an object of the model's inputs")
    # Replicate ignores inputs a model does not declare, so code that sends extra ones must still run
    fields: dict[str, Any] = dict(model.defaults)
    for name, value in raw.items():
        canonical = model.fields.canonical(name)
        if canonical is not None and value is not None and name not in ("task", "image"):
            fields[canonical] = value
    for name in model.required:
        if raw.get(name) in (None, ""):
            raise invalid("input", f"{name} is required")
    if model.family is Family.K21:
        task = str(raw.get("task") or "text2img")
        if task not in _TASKS_21:
            raise invalid("input.task", f"must be one of {', '.join(_TASKS_21)} (got {task!r})")
        fields["task"] = _TASKS_21[task]
        if _TASKS_21[task] is Task.IMG2IMG:
            if not raw.get("image"):
                raise invalid("input.image", f"is required for task {task}")
            fields["image"] = image_bytes(str(raw["image"]), "input.image", settings, local)
    try:
        request = GenerationRequest.parse(fields)
    except ServeError as exc:
        raise renamed(exc, model) from None
    limits = {**LIMITS, **(LIMITS_21 if model.family is Family.K21 else {})}
    for name, (low, high) in limits.items():
        value = getattr(request, model.fields.names[name])
        if not low <= value <= high:
            raise invalid(f"input.{name}", f"must be between {low:g} and {high:g} (got {value:g})")
    return request


def input_echo(raw: Any) -> dict[str, Any]:
    """The input as sent, except that inline images are not copied into every job record."""
    if not isinstance(raw, dict):
        return {}
    return {k: (f"{v[:30]}…" if isinstance(v, str) and v.startswith("data:") else v) for k, v in raw.items()}


def wait_seconds(prefer: str | None) -> int | None:
    """`Prefer: wait` → 60, `Prefer: wait=N` → N (at most 60); None when the caller does not wait."""
    for token in (prefer or "").split(","):
        name, _, value = token.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return MAX_WAIT
        if not value.strip().isdigit() or int(value) < 1:
            raise invalid("Prefer", f"wait must be a whole number of seconds from 1 to {MAX_WAIT} (got {value!r})")
        return min(int(value), MAX_WAIT)
    return None


def duration_seconds(text: str) -> int:
    """`Cancel-After`: 30, 30s, 5m, 1h, 1h30m45s; 5 s to 24 h."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None:
        raise invalid("Cancel-After", f"must be a duration such as 30s, 5m or 1h30m (got {text!r})")
    seconds = int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + int(match["s"] or 0)
    if not 5 <= seconds <= 86400:
        raise invalid("Cancel-After", f"must be from 5 seconds to 24 hours (got {text!r})")
    return seconds


def timestamp(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if moment else None


def _data_uri(blobs: BlobReader, key: str) -> str | None:
    blob = blobs.get(key)
    if blob is None:
        return None
    return f"data:{blob.content_type};base64,{base64.b64encode(blob.data).decode()}"


def _output(job: Job, file_url: Callable[[str], str], blobs: BlobReader, delivery: Delivery) -> list[str] | None:
    if job.data_removed or not job.outputs:
        return None
    if delivery is Delivery.URLS:
        return [file_url(o.key) for o in job.outputs]
    uris = [_data_uri(blobs, o.key) for o in job.outputs]
    return [uri for uri in uris if uri is not None] or None


def canonical_input(request: GenerationRequest, model: ReplicateModel) -> dict[str, Any]:
    """A job another dialect (or the native API) created, in the inputs of the Replicate model served
    here: the values it ran with, under Replicate's names. Images are bytes there, so they are left out;
    a task this model's schema cannot name is given by its canonical name."""
    rendered: dict[str, Any] = {}
    for name, canonical in model.fields.names.items():
        value = getattr(request, canonical, None)
        if name in ("task", "image") or value is None or isinstance(value, bytes):
            continue
        rendered[name] = value.value if isinstance(value, Enum) else value
    if model.family is Family.K21 and request.task in _TASK_NAMES_21:
        rendered = {"task": _TASK_NAMES_21[request.task], **rendered}
    elif request.task is not Task.TEXT2IMG:
        rendered = {"task": request.task.value, **rendered}
    return rendered


def input_of(job: Job, served: ReplicateModel) -> dict[str, Any]:
    if job.data_removed:
        return {}
    if isinstance(job.meta, ReplicateMeta):
        return job.meta.input
    return canonical_input(job.request, served)


def prediction(
    job: Job,
    *,
    base: str,
    file_url: Callable[[str], str],
    blobs: BlobReader,
    logs: list[str],
    served: ReplicateModel,
    delivery: Delivery | None = None,
    pending: bool = False,
) -> dict[str, Any]:
    """The prediction object. `pending`: a sync wait ran out, so the job reads as `starting`, the one
    status on which replicate-python goes on polling instead of returning a null output. `delivery`:
    how to write the files, by default as the prediction was created to (a list page asks for URLs).
    `served`: the model a job of another dialect is shown as."""
    ours = job.meta if isinstance(job.meta, ReplicateMeta) else None
    status = "starting" if pending and not job.state.terminal else _STATUS[job.state]
    lines = list(logs)
    if job.request.seed is not None:
        lines.insert(0, f"Using seed: {job.request.seed}")
    body: dict[str, Any] = {
        "id": job.id,
        "model": ours.model if ours else served.ref,
        "version": ours.version if ours else served.version,
        "input": input_of(job, served),
        "logs": "" if job.data_removed else "\n".join(lines),
        "output": _output(job, file_url, blobs, delivery or Delivery.of(job)),
        "data_removed": job.data_removed,
        "error": job.error_message if job.state is JobState.FAILED else None,
        "status": status,
        "source": "api",
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "completed_at": timestamp(job.completed_at),
        "urls": {"get": f"{base}/v1/predictions/{job.id}", "cancel": f"{base}/v1/predictions/{job.id}/cancel"},
    }
    if ours and ours.deadline:
        body["deadline"] = ours.deadline
    if job.state.terminal:
        metrics: dict[str, Any] = {"predict_time": job.predict_time, "total_time": job.total_time}
        if job.state is JobState.SUCCEEDED:
            metrics["image_count"] = len(job.outputs)
        body["metrics"] = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items() if v is not None}
    return body
