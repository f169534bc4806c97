"""Blob stores: where input and output bytes live (local files by default)."""

from kandinsky_serve.blobs.local import LocalBlobStore
from kandinsky_serve.blobs.protocol import Blob, BlobStore

__all__ = ["Blob", "BlobStore", "LocalBlobStore"]
