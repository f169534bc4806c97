"""RedisFileIndex: upload records in Redis, for API nodes that share no disk.

Each record is a string `<prefix>:file:<id>` that Redis drops at the file's expiry on its own. An
owner's files are the members of `<prefix>:files:<owner>`, all scored 0 so that they sort by id, which
is by creation time; members whose record has gone are pruned when a listing meets them, and the set
itself expires with the newest file it holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from kandinsky_serve.files.model import FilePage, UploadedFile
from kandinsky_serve.redis_server import check_server, connect


class RedisFileIndex:
    def __init__(self, url: str, *, prefix: str = "ks") -> None:
        self._redis = connect(url, decode_responses=True)
        self._record = f"{prefix}:file:"
        self._owned = f"{prefix}:files:"
        try:
            check_server(self._redis)
        except BaseException:
            self._redis.close()
            raise

    def add(self, file: UploadedFile) -> None:
        expires_ms = round(file.expires_at.astimezone(UTC).timestamp() * 1000)
        owned = self._owned + file.owner
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._record + file.id, file.model_dump_json(), pxat=expires_ms)
        pipe.zadd(owned, {file.id: 0})
        # every file is added with the same retention, so the newest one expires last
        pipe.pexpireat(owned, expires_ms)
        pipe.execute()

    def get(self, file_id: str) -> UploadedFile | None:
        record = cast(str | None, self._redis.get(self._record + file_id))
        return UploadedFile.model_validate_json(record) if record else None

    def page(self, owner: str, *, now: datetime, limit: int, cursor: str | None = None) -> FilePage:
        owned = self._owned + owner
        files: list[UploadedFile] = []
        upper = f"({cursor}" if cursor else "+"
        while len(files) <= limit:
            ids = cast(list[str], self._redis.zrevrangebylex(owned, upper, "-", start=0, num=limit + 1))
            if not ids:
                break
            records = cast(list[Any], self._redis.mget([self._record + i for i in ids]))
            gone = [i for i, record in zip(ids, records, strict=True) if record is None]
            if gone:
                self._redis.zrem(owned, *gone)
            found = (UploadedFile.model_validate_json(r) for r in records if r is not None)
            files += [f for f in found if f.expires_at > now]
            upper = f"({ids[-1]}"
        return FilePage(files[:limit], files[limit - 1].id if len(files) > limit else None)

    def remove(self, file_id: str) -> bool:
        file = self.get(file_id)
        if file is None:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._record + file_id)
        pipe.zrem(self._owned + file.owner, file_id)
        return bool(pipe.execute()[0])

    def expire(self, now: datetime) -> list[str]:
        return []  # Redis drops records (and the blob store their bytes) when they expire

    def close(self) -> None:
        self._redis.close()
