"""FileService: the use cases of uploaded files. Each belongs to the caller that uploaded it, is
kept for the retention period, and is read back as a model input by id, never over HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import new_job_id, utcnow
from kandinsky_serve.files.model import FilePage, UploadedFile, blob_key
from kandinsky_serve.files.protocol import FileIndex
from kandinsky_serve.settings import Settings


class FileService:
    def __init__(
        self, settings: Settings, index: FileIndex, blobs: BlobStore, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.clock = clock

    @property
    def max_bytes(self) -> int:
        # an upload is an input image, so the input limit is the upload limit
        return self.settings.max_input_bytes

    def create(
        self, owner: str, data: bytes, *, name: str, content_type: str, metadata: dict[str, Any] | None = None
    ) -> UploadedFile:
        if len(data) > self.max_bytes:
            raise too_large(self.max_bytes)
        now = self.clock()
        file = UploadedFile(
            id=new_job_id(),
            owner=owner,
            name=name,
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            metadata=dict(metadata or {}),
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.retention_seconds),
        )
        # the bytes first: a record is never listed whose bytes are not stored yet
        self.blobs.put(file.blob_key, data, content_type)
        try:
            self.index.add(file)
        except BaseException:
            self.blobs.delete([file.blob_key])
            raise
        return file

    def get(self, file_id: str, owner: str) -> UploadedFile:
        file = self.index.get(file_id)
        # another caller's file, like an expired one, does not exist as far as this caller knows
        if file is None or file.owner != owner or file.expires_at <= self.clock():
            raise ServeError(ErrorCode.NOT_FOUND, f"File {file_id} not found.")
        return file

    def content(self, file_id: str, owner: str) -> tuple[UploadedFile, bytes]:
        file = self.get(file_id, owner)
        blob = self.blobs.get(file.blob_key)
        if blob is None:
            raise ServeError(ErrorCode.NOT_FOUND, f"File {file_id} not found.")
        return file, blob.data

    def list(self, owner: str, *, limit: int = 100, cursor: str | None = None) -> FilePage:
        return self.index.page(owner, now=self.clock(), limit=limit, cursor=cursor)

    def delete(self, file_id: str, owner: str) -> None:
        file = self.get(file_id, owner)
        self.index.remove(file.id)
        self.blobs.delete([file.blob_key])

    def expire(self) -> int:
        """Removes the files past retention; the number removed."""
        ids = self.index.expire(self.clock())
        if ids:
            self.blobs.delete([blob_key(i) for i in ids])
        return len(ids)

    def close(self) -> None:
        self.index.close()


def too_large(limit: int) -> ServeError:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    return ServeError(ErrorCode.PAYLOAD_TOO_LARGE, f"Files must be less than {size} in size.")


def open_files(settings: Settings, blobs: BlobStore) -> FileService:
    """Upload records beside the jobs: in Redis when the jobs are, else in SQLite in the data dir."""
    index: FileIndex
    if settings.store_url is not None:
        from kandinsky_serve.files.redis import RedisFileIndex

        index = RedisFileIndex(settings.store_url, prefix=settings.redis_prefix)
    else:
        from kandinsky_serve.files.sqlite import SqliteFileIndex

        index = SqliteFileIndex(settings.data_dir / "files.sqlite3")
    return FileService(settings, index, blobs)
