"""JSON bodies that dialects read themselves (Segmind, Eachlabs), parsed so that no body can crash a
route: syntax errors, nesting deeper than the parser can recurse and integers longer than Python
will convert are each a 400 that names the body, in the dialect's own error shape."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from kandinsky_serve.domain.errors import invalid


def parse_object(raw: bytes, *, empty_is: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON object in raw; `empty_is` stands in for an empty body where a dialect allows one."""
    if empty_is is not None and not raw.strip():
        return dict(empty_is)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid("body", f"is not valid JSON: {error}") from None
    except RecursionError:
        raise invalid("body", "is nested too deeply") from None
    except ValueError as error:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise invalid("body", f"holds a number that cannot be read: {error}") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object of parameters")
    return body


async def read_object(request: Request, *, empty_is: dict[str, Any] | None = None) -> dict[str, Any]:
    return parse_object(await request.body(), empty_is=empty_is)
