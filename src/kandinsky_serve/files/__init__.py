"""Uploaded files (Replicate's files API): records in a FileIndex, bytes in the BlobStore."""

from kandinsky_serve.files.model import FilePage, UploadedFile
from kandinsky_serve.files.service import FileService, open_files

__all__ = ["FilePage", "FileService", "UploadedFile", "open_files"]
