"""Opens the configured stores. The one place that knows which backend a setting means."""

from __future__ import annotations

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import JobStore


def open_store(settings: Settings) -> JobStore:
    if settings.store_url is not None:
        from kandinsky_serve.store.redis import RedisJobStore

        return RedisJobStore(settings.store_url, prefix=settings.redis_prefix)
    from kandinsky_serve.store.sqlite import SqliteJobStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteJobStore(settings.database_path)


def open_blobs(settings: Settings) -> BlobStore:
    if settings.store_url is not None:
        from kandinsky_serve.blobs.redis import RedisBlobStore

        return RedisBlobStore(settings.store_url, prefix=settings.redis_prefix, ttl_seconds=settings.retention_seconds)
    from kandinsky_serve.blobs.local import LocalBlobStore

    settings.blob_dir.mkdir(parents=True, exist_ok=True)
    return LocalBlobStore(settings.blob_dir)
