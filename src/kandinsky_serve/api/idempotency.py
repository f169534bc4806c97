"""The `Idempotency-Key` request header, as every dialect's create route reads it.

Stripe's semantics (see JobService.submit): the key is the client's, unique per request it means to
make once; a retry with the same key gets the same job. Here it is only read and checked. Stripe
allows 255 characters; printable ASCII keeps a key the same through every proxy and log.
"""

from __future__ import annotations

from fastapi import Request

from kandinsky_serve.domain.errors import invalid
from kandinsky_serve.service import IDEMPOTENCY_HEADER

MAX_LENGTH = 255


def idempotency_key(request: Request) -> str | None:
    """The header's value, or None when it is absent; an invalid_input error naming it when it is
    empty, too long, sent twice or not printable ASCII."""
    values = request.headers.getlist(IDEMPOTENCY_HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(IDEMPOTENCY_HEADER, "was sent more than once; send one key per request")
    value = values[0]
    if not value:
        raise invalid(IDEMPOTENCY_HEADER, "is empty; send a unique string, such as a UUID, or no header")
    if len(value) > MAX_LENGTH:
        raise invalid(IDEMPOTENCY_HEADER, f"is {len(value)} characters long; at most {MAX_LENGTH} are allowed")
    if not all(" " <= char <= "~" for char in value):
        raise invalid(IDEMPOTENCY_HEADER, "must be printable ASCII, such as a UUID")
    return value
