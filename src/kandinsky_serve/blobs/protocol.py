"""BlobStore: bytes by key. Writes are atomic and idempotent, so a retried job overwrites cleanly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol


@dataclass(frozen=True)
class Blob:
    data: bytes
    content_type: str


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Stores data under key (keys look like 'outputs/<job id>/0.webp'), replacing any old value."""
        ...

    def get(self, key: str) -> Blob | None: ...

    def delete(self, keys: Sequence[str]) -> None:
        """Removes the keys that exist; missing keys are ignored."""
        ...


def check_key(key: str) -> None:
    """ValueError for a key that is not a plain relative path: a key valid in one store is valid in
    every other, and none can name a file outside a blob directory."""
    if (
        not key
        or "\\" in key
        or "\0" in key
        or PurePosixPath(key).is_absolute()
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise ValueError(f"blob key {key!r} must be a relative path of names separated by '/', without '.' or '..'")
