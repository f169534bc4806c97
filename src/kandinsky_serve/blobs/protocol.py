"""BlobStore: bytes by key. Writes are atomic and idempotent, so a retried job overwrites cleanly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
