"""FileIndex: the records of uploaded files, per owner, newest first (their bytes are blobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from kandinsky_serve.files.model import FilePage, UploadedFile


class FileIndex(Protocol):
    def add(self, file: UploadedFile) -> None: ...

    def get(self, file_id: str) -> UploadedFile | None:
        """The record, also one past its expiry that no sweep has removed yet (the caller decides)."""
        ...

    def page(self, owner: str, *, now: datetime, limit: int, cursor: str | None = None) -> FilePage:
        """The owner's unexpired files, newest first; cursor: the id of the last file of the page before."""
        ...

    def remove(self, file_id: str) -> bool:
        """True when the record existed."""
        ...

    def expire(self, now: datetime) -> list[str]:
        """Removes the records expired at `now`; returns their ids (so their blobs can go too)."""
        ...

    def close(self) -> None: ...
