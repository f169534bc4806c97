"""The canonical language every layer speaks: requests, progress events, error codes."""

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.domain.request import FuseItem, GenerationRequest, OutputFormat, Task

__all__ = [
    "ErrorCode",
    "FuseItem",
    "GenerationRequest",
    "OutputFormat",
    "ProgressEvent",
    "ServeError",
    "Stage",
    "Task",
]
