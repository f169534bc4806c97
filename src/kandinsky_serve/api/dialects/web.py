"""The web playground: `/` and its static files, plus `/web/config` (what the page should offer).

Not a vendor dialect, but served the same way (`DIALECT`, listed in api/dialects). The page itself
only calls the native API, from the browser, with the key the user typed in.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.errors import not_found
from kandinsky_serve.api.state import State
from kandinsky_serve.domain import request as limits
from kandinsky_serve.domain.catalogue import DEFAULT, OFFERED

router = APIRouter(tags=["native"], include_in_schema=False)

_WEB = files("kandinsky_serve.api").joinpath("web")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# one flat folder of plainly named files: nothing a request names can reach outside it
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
# the page runs only its own scripts and talks only to this server; output images may sit
# behind a configured public URL, so images may come from anywhere
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _file(name: str, kind: str) -> Response:
    path = _WEB.joinpath(name)
    if not path.is_file():
        raise not_found(f"Static file {name!r}")
    return Response(path.read_bytes(), media_type=_TYPES[kind], headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])  # HEAD too, for uptime checks
def index() -> Response:
    """The playground page."""
    page = _file("index.html", "html")
    page.headers["Content-Security-Policy"] = _CSP
    return page


@router.get("/static/{name}")
def static(name: str) -> Response:
    match = _NAME.match(name)
    if match is None:
        raise not_found(f"Static file {name!r}")
    return _file(name, match.group(1))


@router.get("/web/config")
def config(state: State) -> JSONResponse:
    """The served model, its tasks and schedulers, and the request limits, for the page's form."""
    model = state.service.model
    body: dict[str, Any] = {
        "model": model.id,
        "family": model.family.value,
        "tasks": sorted(task.value for task in model.tasks),
        "schedulers": list(OFFERED[model.family]),
        "default_scheduler": DEFAULT[model.family],
        "limits": {
            "min_side": limits.MIN_SIDE,
            "max_side": limits.MAX_SIDE,
            "max_images": limits.MAX_IMAGES,
            "max_steps": limits.MAX_STEPS,
            "max_prompt_chars": limits.MAX_PROMPT_CHARS,
            "max_fuse_items": limits.MAX_FUSE_ITEMS,
            "max_seed": limits.MAX_SEED,
        },
    }
    return JSONResponse(body, headers={"Cache-Control": "no-cache"})


# its routes are tagged native: their errors are rendered in the native shape
DIALECT = Dialect("web", router)
