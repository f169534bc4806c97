"""JSON bodies that dialects read themselves (Segmind, Eachlabs), parsed so that no body can crash a
route: syntax errors, nesting deeper than the parser can recurse and integers longer than Python
will convert are each a 400 that names the body, in the dialect's own error shape."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel

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


def openapi_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` declaring such a body: the JSON schema of a pydantic model that describes it to
    clients (and fuzzers) but never parses it, so errors stay in the dialect's shape. Self-contained:
    nested models are written in place, as an operation cannot add to the document's components.
    `required=False` where an empty body stands for `{}`."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"requestBody": {"required": required, "content": {"application/json": {"schema": inline(schema)}}}}
