"""An uploaded file's record: what the files API reports about it. Its bytes live in the BlobStore."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class UploadedFile(BaseModel):
    """A file a caller uploaded to use as a model input; it belongs to that caller alone."""

    model_config = ConfigDict(frozen=True)

    id: str
    owner: str
    name: str
    content_type: str
    size: int = Field(ge=0)
    sha256: str
    md5: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    expires_at: datetime

    @property
    def blob_key(self) -> str:
        return blob_key(self.id)


def blob_key(file_id: str) -> str:
    return f"uploads/{file_id}"


@dataclass(frozen=True)
class FilePage:
    """Newest first; `next_cursor` continues after the last file, None on the last page."""

    files: list[UploadedFile] = field(default_factory=list)
    next_cursor: str | None = None
