"""LocalBlobStore: each blob a file under one directory, replaced atomically on every write.

A blob's key is its path under the root ('outputs/<job id>/0.webp'), so operators can browse and
back it up with ordinary tools. Its content type is implied by the key's extension; a type the
extension does not imply is kept in a small sidecar file next to it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kandinsky_serve.blobs.protocol import Blob, check_key

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_IMPLIED_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".npz": "application/x-npz",
    ".json": "application/json",
}
_SIDECAR_SUFFIX = ".content-type"  # reserved: no key may end with it


class LocalBlobStore:
    """A BlobStore in a directory. Files are created readable by their owner only: they hold users' images."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        sidecar = _sidecar(path)
        if content_type == _implied_type(path):
            _write_atomically(path, data)
            sidecar.unlink(missing_ok=True)
        else:
            # the type first: a reader between the two writes sees the new type with the old bytes at
            # worst, never bytes that no type describes
            _write_atomically(sidecar, content_type.encode())
            _write_atomically(path, data)

    def get(self, key: str) -> Blob | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            content_type = _sidecar(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            content_type = _implied_type(path)
        return Blob(data=data, content_type=content_type)

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except (IsADirectoryError, NotADirectoryError):
                continue  # a directory (or a path through a file) is no blob, so it is missing
            _sidecar(path).unlink(missing_ok=True)
            self._prune(path.parent)

    def _path(self, key: str) -> Path:
        """The file for a key; ValueError for a key that is not a plain relative path inside the root."""
        check_key(key)
        parts = key.split("/")
        if key.endswith(_SIDECAR_SUFFIX):
            raise ValueError(f"blob key {key!r} ends with {_SIDECAR_SUFFIX!r}, which the store reserves")
        path = self._root.joinpath(*parts)
        # a symlink inside the root could still lead out of it
        if not path.resolve().is_relative_to(self._root):
            raise ValueError(f"blob key {key!r} leads outside the blob store")
        return path

    def _prune(self, directory: Path) -> None:
        """Removes directories left empty, so expiring millions of jobs leaves no empty folders behind."""
        while directory != self._root and directory.is_relative_to(self._root):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): everything above it is in use too
            directory = directory.parent


def _implied_type(path: Path) -> str:
    return _IMPLIED_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never part of one; the new one is on disk on return."""
    try:
        fd, temp = _temp_file_beside(path)
    except FileNotFoundError:
        # a concurrent delete() pruned the directory between mkdir and mkstemp; once more is enough
        fd, temp = _temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _temp_file_beside(path: Path) -> tuple[int, str]:
    # in the same directory, so that os.replace is a rename within one filesystem (atomic)
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable: without it a crash can lose the new directory entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
