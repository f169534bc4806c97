"""Replicate's HTTP API under /v1: predictions, the model and version endpoints, the webhook secret
(the files API is in files.py).

Outputs are URLs, except for predictions created in sync mode (`Prefer: wait`) on a server reached over
plain http, which carry data URIs on every read (see `Delivery`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from kandinsky_serve.api.auth import CallerDep, Owner
from kandinsky_serve.api.dialects.replicate import schemas, translate
from kandinsky_serve.api.dialects.replicate.files import local_files
from kandinsky_serve.api.dialects.replicate.pages import PAGE_SIZE, links
from kandinsky_serve.api.dialects.replicate.problems import replicate_errors
from kandinsky_serve.api.dialects.replicate.signing import secret_for
from kandinsky_serve.api.dialects.replicate.webhooks import subscriptions
from kandinsky_serve.api.errors import ON_READ, ON_SUBMIT
from kandinsky_serve.api.fetch import run_with_fetches
from kandinsky_serve.api.idempotency import idempotency_key
from kandinsky_serve.api.inputs import check_public_url
from kandinsky_serve.api.state import Service
from kandinsky_serve.api.urls import base_url, file_url
from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, utcnow
from kandinsky_serve.domain.meta import ReplicateMeta
from kandinsky_serve.service import JobService

router = APIRouter(prefix="/v1", tags=["replicate"])

# replicate-python times out N + 0.5 s after sending `Prefer: wait=N`; answer well before that
_WAIT_MARGIN = 0.3

PreferHeader = Annotated[str | None, Header()]
CancelAfterHeader = Annotated[str | None, Header()]


def render(
    request: Request,
    service: JobService,
    job: Job,
    *,
    pending: bool = False,
    delivery: translate.Delivery | None = None,
) -> dict[str, Any]:
    return translate.prediction(
        job,
        base=base_url(request),
        file_url=lambda key: file_url(request, key),
        blobs=service.reader,
        logs=service.logs(job.id),
        served=schemas.for_family(service.family_of(job.request.model)),
        delivery=delivery,
        pending=pending,
    )


def _submit(
    model: schemas.ReplicateModel,
    body: dict[str, Any],
    request: Request,
    service: JobService,
    caller: Caller,
    deadline: float | None,
    delivery: translate.Delivery,
) -> Job:
    runs = _served(model, service)
    once = idempotency_key(request)
    hooks = subscriptions(body, lambda url, name: check_public_url(url, name, service.settings))
    # a field of the job, which the janitor enforces: it outlives this process
    cancel_at = None if deadline is None else utcnow() + timedelta(seconds=deadline)
    meta = ReplicateMeta(
        model=model.ref,
        version=model.version,
        input=translate.input_echo(body.get("input")),
        base_url=base_url(request),
        delivery=delivery.value,
        deadline=translate.timestamp(cancel_at),
    )
    local = local_files(request, caller.owner)
    generation = translate.to_request(model, body.get("input"), service.settings, local)
    generation = generation.model_copy(update={"model": runs})  # checked against that model by submit
    try:
        return service.submit(generation, caller, meta=meta, idempotency_key=once, cancel_at=cancel_at, webhooks=hooks)
    except ServeError as exc:
        raise translate.renamed(exc, model) from None


async def _create(
    model: schemas.ReplicateModel,
    body: dict[str, Any],
    request: Request,
    service: JobService,
    caller: Caller,
    prefer: str | None,
    cancel_after: str | None,
) -> JSONResponse:
    wait = translate.wait_seconds(prefer)
    deadline = translate.duration_seconds(cancel_after) if cancel_after else None
    delivery = translate.Delivery.for_create(wait, base_url(request))
    job = await run_with_fetches(service.settings, _submit, model, body, request, service, caller, deadline, delivery)
    if wait is not None:
        job = await service.wait(job.id, caller.owner, max(wait - _WAIT_MARGIN, 0.1))
    pending = wait is not None and not job.state.terminal
    view = await anyio.to_thread.run_sync(lambda: render(request, service, job, pending=pending))
    headers = {"Location": view["urls"]["get"]}
    return JSONResponse(view, status_code=202 if pending else 201, headers=headers)


_LOCATION = {"Location": {"description": "the prediction's URL", "required": True, "schema": {"type": "string"}}}
_CREATED = {
    201: {"description": "created (or finished, with `Prefer: wait`)", "headers": _LOCATION},
    202: {
        "description": "with `Prefer: wait`: not finished in time; poll its URL",
        "headers": _LOCATION,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **replicate_errors(*ON_SUBMIT, ErrorCode.NOT_FOUND),  # NOT_FOUND: a model not served here
}


@router.post("/predictions", status_code=201, responses=_CREATED)
async def create_prediction(
    body: dict[str, Any],
    request: Request,
    service: Service,
    caller: CallerDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    """Create a prediction of a version (id, `owner/name:id` or `owner/name`)."""
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise invalid("version", "is required: a version id, owner/name:version or owner/name")
    model = schemas.resolve_version(version)
    return await _create(model, body, request, service, caller, prefer, cancel_after)


@router.post("/models/{owner}/{name}/predictions", status_code=201, responses=_CREATED)
async def create_model_prediction(
    owner: str,
    name: str,
    body: dict[str, Any],
    request: Request,
    service: Service,
    caller: CallerDep,
    prefer: PreferHeader = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    """Create a prediction of a model's latest version."""
    model = schemas.model_named(owner, name)
    return await _create(model, body, request, service, caller, prefer, cancel_after)


@router.get("/predictions", responses=replicate_errors(*ON_READ, ErrorCode.INVALID_INPUT))  # cursor
def list_predictions(
    request: Request, service: Service, owner: Owner, cursor: str | None = None, history: str | None = None
) -> dict[str, Any]:
    """Newest first, 100 a page: every job of the caller's, also those of other dialects."""
    page = service.list(owner, limit=PAGE_SIZE, cursor=cursor)
    following, previous = links(f"{base_url(request)}/v1/predictions", cursor, history, page.next_cursor)
    # list entries carry URLs, not inline images, so a page stays small
    results = [render(request, service, job, delivery=translate.Delivery.URLS) for job in page.jobs]
    return {"next": following, "previous": previous, "results": results}


@router.get("/predictions/{prediction_id}", responses=replicate_errors(*ON_READ))
def get_prediction(prediction_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    return render(request, service, service.get(prediction_id, owner))


@router.post("/predictions/{prediction_id}/cancel", responses=replicate_errors(*ON_READ))
def cancel_prediction(prediction_id: str, request: Request, service: Service, owner: Owner) -> dict[str, Any]:
    """Cancel; a finished prediction is returned as it is."""
    return render(request, service, service.cancel(prediction_id, owner))


def _served(model: schemas.ReplicateModel, service: JobService) -> str:
    """The id of the served model that runs this Replicate model's predictions."""
    schemas.check_served(model, {entry.family for entry in service.models}, service.served_ids)
    return service.for_family(model.family, model.ref).id


def _served_model(owner: str, name: str, service: JobService) -> schemas.ReplicateModel:
    model = schemas.model_named(owner, name)
    _served(model, service)
    return model


@router.get("/models/{owner}/{name}", responses=replicate_errors(*ON_READ))
def get_model(owner: str, name: str, request: Request, service: Service, _: Owner) -> dict[str, Any]:
    return schemas.model_json(_served_model(owner, name, service), base_url(request))


@router.get("/models/{owner}/{name}/versions", responses=replicate_errors(*ON_READ))
def list_versions(owner: str, name: str, service: Service, _: Owner) -> dict[str, Any]:
    model = _served_model(owner, name, service)
    return {"next": None, "previous": None, "results": [schemas.version_json(model)]}


@router.get("/models/{owner}/{name}/versions/{version_id}", responses=replicate_errors(*ON_READ))
def get_version(owner: str, name: str, version_id: str, service: Service, _: Owner) -> dict[str, Any]:
    model = _served_model(owner, name, service)
    if version_id != model.version:
        raise ServeError(ErrorCode.NOT_FOUND, f"Version {version_id} of {model.ref} not found.")
    return schemas.version_json(model)


@router.get("/webhooks/default/secret", responses=replicate_errors(ErrorCode.UNAUTHORIZED, ErrorCode.UNAVAILABLE))
def webhook_secret(caller: CallerDep, service: Service) -> dict[str, str]:
    """The caller's signing secret: each caller verifies with its own, so none can forge another's."""
    return {"key": secret_for(service.settings, caller.owner)}
