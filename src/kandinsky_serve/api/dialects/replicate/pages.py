"""Replicate's list pages: `{"next", "previous", "results"}` with absolute URLs that replicate-python
requests verbatim. Our stores page forward only, so each `next` URL carries the cursors of the pages
before it (`history`), from which `previous` is built."""

from __future__ import annotations

PAGE_SIZE = 100  # Replicate's page size for GET /v1/predictions (and /v1/files)


def links(url: str, cursor: str | None, history: str | None, next_cursor: str | None) -> tuple[str | None, str | None]:
    """(next, previous) for the page at `cursor` of the list at `url`."""
    earlier = [c for c in (history or "").split(".") if c]
    following = None
    if next_cursor:
        trail = ".".join([*earlier, cursor] if cursor else earlier)
        following = f"{url}?cursor={next_cursor}" + (f"&history={trail}" if trail else "")
    previous = None
    if cursor:
        before, rest = (earlier[-1], earlier[:-1]) if earlier else (None, [])
        previous = url + (f"?cursor={before}" if before else "") + (f"&history={'.'.join(rest)}" if rest else "")
    return following, previous
