"""Replicate's files API under /v1/files: upload, get, list, delete, download.

replicate-python uploads every open file (or Path) in `input` here and sends the file's `urls.get`
instead (its default file_encoding_strategy). Such URLs, and the signed output links this server hands
out, are this server's own: `local_files` reads them from the stores as the caller, so they are never
fetched over HTTP (where the SSRF guard would refuse a loopback address anyway) and one key can never
reach another's file.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import anyio
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from kandinsky_serve.api.auth import CallerDep, Owner
from kandinsky_serve.api.dialects.replicate.pages import PAGE_SIZE, links
from kandinsky_serve.api.dialects.replicate.problems import replicate_errors
from kandinsky_serve.api.errors import ON_READ
from kandinsky_serve.api.inputs import LocalFiles
from kandinsky_serve.api.state import app_state
from kandinsky_serve.api.urls import base_url, valid_signature
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.files.model import UploadedFile
from kandinsky_serve.files.service import FileService, too_large

router = APIRouter(prefix="/v1", tags=["replicate"])

_MAX_NAME_BYTES = 255
_OWN_FILE = re.compile(r"(?P<id>[0-9a-z]+)(?:/download)?")


def file_service(request: Request) -> FileService:
    files = app_state(request).files
    if files is None:  # an app built without the lifespan's stores
        raise ServeError(ErrorCode.INTERNAL, "Uploads are not available on this server.")
    return files


def _time(moment: datetime) -> str:
    # Replicate writes file times with milliseconds: 2024-08-22T12:26:51.079Z
    moment = moment.astimezone(UTC)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{moment.microsecond // 1000:03d}Z"


def file_json(file: UploadedFile, base: str) -> dict[str, Any]:
    return {
        "id": file.id,
        "name": file.name,
        "content_type": file.content_type,
        "size": file.size,
        "etag": file.md5,
        "checksums": {"sha256": file.sha256, "md5": file.md5},
        "metadata": file.metadata,
        "created_at": _time(file.created_at),
        "expires_at": _time(file.expires_at),
        "urls": {"get": f"{base}/v1/files/{file.id}"},
    }


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise invalid("metadata", "must be a JSON object") from None
    if not isinstance(value, dict):
        raise invalid("metadata", "must be a JSON object")
    return value


def _name(filename: str | None, content: UploadFile) -> str:
    name = filename if filename is not None else (content.filename or "file")
    if not name or len(name.encode()) > _MAX_NAME_BYTES:
        raise invalid("filename", f"must be 1 to {_MAX_NAME_BYTES} bytes of UTF-8")
    return name


@router.post(
    "/files",
    status_code=201,
    responses=replicate_errors(
        ErrorCode.INVALID_INPUT, ErrorCode.UNAUTHORIZED, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.UNAVAILABLE
    ),
)
async def create_file(
    request: Request,
    owner: Owner,
    content: Annotated[UploadFile, File(description="the file's bytes")],
    filename: Annotated[str | None, Form(description="default: the content part's filename")] = None,
    content_type: Annotated[str | None, Form(alias="type", description="default: the content part's type")] = None,
    metadata: Annotated[str | None, Form(description="a JSON object kept with the file")] = None,
) -> JSONResponse:
    """Upload a file (multipart/form-data) to pass as a model input; kept for the retention period."""
    files = file_service(request)
    data = await content.read(files.max_bytes + 1)
    if len(data) > files.max_bytes:
        raise too_large(files.max_bytes)
    kind = content_type or content.content_type or "application/octet-stream"
    name, extra = _name(filename, content), _metadata(metadata)

    def create() -> UploadedFile:
        return files.create(owner, data, name=name, content_type=kind, metadata=extra)

    file = await anyio.to_thread.run_sync(create)
    view = file_json(file, base_url(request))
    return JSONResponse(view, status_code=201, headers={"Location": view["urls"]["get"]})


@router.get(
    "/files", responses=replicate_errors(ErrorCode.UNAUTHORIZED, ErrorCode.INVALID_INPUT, ErrorCode.UNAVAILABLE)
)
def list_files(request: Request, owner: Owner, cursor: str | None = None, history: str | None = None) -> dict[str, Any]:
    """The caller's files, newest first, 100 a page."""
    page = file_service(request).list(owner, limit=PAGE_SIZE, cursor=cursor)
    base = base_url(request)
    following, previous = links(f"{base}/v1/files", cursor, history, page.next_cursor)
    return {"next": following, "previous": previous, "results": [file_json(f, base) for f in page.files]}


@router.get("/files/{file_id}", responses=replicate_errors(*ON_READ))
def get_file(file_id: str, request: Request, owner: Owner) -> dict[str, Any]:
    return file_json(file_service(request).get(file_id, owner), base_url(request))


@router.get(
    "/files/{file_id}/download",
    response_class=Response,
    responses={
        200: {
            "description": "the file, with its content type",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **replicate_errors(*ON_READ),
    },
)
def download_file(file_id: str, request: Request, owner: Owner) -> Response:
    """The file's bytes, for its owner's key."""
    file, data = file_service(request).content(file_id, owner)
    return Response(data, media_type=file.content_type, headers={"ETag": f'"{file.md5}"'})


@router.delete("/files/{file_id}", status_code=204, responses=replicate_errors(*ON_READ))
def delete_file(file_id: str, request: Request, caller: CallerDep) -> Response:
    file_service(request).delete(file_id, caller.owner)
    return Response(status_code=204)


def local_files(request: Request, owner: str) -> LocalFiles:
    """Reads this server's own file URLs as `owner`: uploads (`/v1/files/<id>`, as `urls.get` gives
    them) and signed output links (`/v1/files/outputs/...`). Other URLs are left to be fetched."""
    state = app_state(request)
    bases = {f"{b}/v1/files/" for b in (base_url(request), str(request.base_url).rstrip("/"))}

    def resolve(url: str, field: str) -> bytes | None:
        prefix = next((b for b in bases if url.startswith(b)), None)
        if prefix is None:
            return None
        parts = urlsplit(url[len(prefix) :])
        if parts.path.startswith("outputs/"):
            query = parse_qs(parts.query)
            expires, sig = (query.get("expires") or ["0"])[0], (query.get("sig") or [""])[0]
            signed = expires.isdigit() and valid_signature(state.url_secret, parts.path, int(expires), sig)
            blob = state.service.reader.get(parts.path) if signed else None
            if blob is None:
                raise invalid(field, "the output link has expired or is not valid")
            return blob.data
        match = _OWN_FILE.fullmatch(parts.path)
        if match is None or state.files is None:
            return None
        try:
            return state.files.content(match["id"], owner)[1]
        except ServeError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise invalid(field, f"file {match['id']} not found (expired, deleted or another key's)") from None
            raise

    return resolve
