"""Python client for kandinsky-serve's native API.

    from kandinsky_serve.client import Client

    client = Client("http://127.0.0.1:8000", api_key="ks_...")
    images = client.generate("a red fox in the snow", width=768, height=768, num_images=2)
    images[0].save("fox.png")  # PIL images; .seeds on the list tell which seed made which

Errors come back as `ClientError` subclasses chosen by the server's stable error code
(InvalidInput, Unauthorized, NotFound, InsufficientCredits, RateLimited, Overloaded,
GenerationFailed, ...), each with .code, .message, .field and .status.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from kandinsky_serve.domain.events import ProgressEvent, Stage

__all__ = [
    "Client",
    "ClientError",
    "GeneratedImages",
    "GenerationFailed",
    "InsufficientCredits",
    "InvalidInput",
    "JobView",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "Unauthorized",
]


class ClientError(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


class InvalidInput(ClientError): ...


class Unauthorized(ClientError): ...


class NotFound(ClientError): ...


class InsufficientCredits(ClientError): ...


class RateLimited(ClientError): ...


class Overloaded(ClientError): ...


class GenerationFailed(ClientError): ...


_BY_CODE: dict[str, type[ClientError]] = {
    "invalid_input": InvalidInput,
    "payload_too_large": InvalidInput,
    "unauthorized": Unauthorized,
    "forbidden": Unauthorized,
    "not_found": NotFound,
    "insufficient_credits": InsufficientCredits,
    "rate_limited": RateLimited,
    "overloaded": Overloaded,
    "generation_failed": GenerationFailed,
    "out_of_memory": GenerationFailed,
    "worker_lost": GenerationFailed,
}


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message, field_name = error["code"], error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):
        code, message, field_name = "http_error", response.text or response.reason_phrase, None
    raise _BY_CODE.get(code, ClientError)(code, message, field=field_name, status=response.status_code)


@dataclass(frozen=True)
class JobView:
    """A job as the server reports it."""

    id: str
    state: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str] | None = None
    progress: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobView:
        return cls(data["id"], data["state"], data.get("outputs") or [], data.get("error"), data.get("progress"), data)

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "canceled")

    @property
    def seeds(self) -> list[int]:
        return [int(o["seed"]) for o in self.outputs]


class GeneratedImages(list[Image.Image]):
    """The images of a job, in order, with the job they came from."""

    def __init__(self, images: list[Image.Image], job: JobView) -> None:
        super().__init__(images)
        self.job = job
        self.seeds = job.seeds


class Client:
    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("KS_API_KEY")
        headers = {"x-api-key": key} if key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, request: dict[str, Any] | None = None, **fields: Any) -> JobView:
        """Queues a job. Fields are GenerationRequest's; image fields take bytes or base64 strings."""
        body = {**(request or {}), **fields}
        for name in ("image", "mask", "hint"):
            if isinstance(body.get(name), bytes):
                body[name] = _b64(body[name])
        body["fuse"] = [
            {**item, "image": _b64(item["image"])} if isinstance(item.get("image"), bytes) else item
            for item in body.get("fuse", ())
        ]
        response = self._http.post("/v1/jobs", json=body)
        _raise_for(response)
        return JobView.from_json(response.json())

    def get(self, job_id: str) -> JobView:
        response = self._http.get(f"/v1/jobs/{job_id}")
        _raise_for(response)
        return JobView.from_json(response.json())

    def list(self, limit: int = 50, cursor: str | None = None) -> tuple[list[JobView], str | None]:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = self._http.get("/v1/jobs", params=params)
        _raise_for(response)
        data = response.json()
        return [JobView.from_json(j) for j in data["jobs"]], data["next_cursor"]

    def cancel(self, job_id: str) -> JobView:
        response = self._http.post(f"/v1/jobs/{job_id}/cancel")
        _raise_for(response)
        return JobView.from_json(response.json())

    def events(self, job_id: str) -> Iterator[ProgressEvent | JobView]:
        """Live progress of a job, then the finished job (server-sent events)."""
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if name == "progress":
                        yield ProgressEvent(Stage(data["stage"]), int(data["step"]), int(data["total"]))
                    elif name == "done":
                        yield JobView.from_json(data)
                        return

    def wait(self, job_id: str, on_progress: Callable[[ProgressEvent], None] | None = None) -> JobView:
        for event in self.events(job_id):
            if isinstance(event, JobView):
                return event
            if on_progress is not None:
                on_progress(event)
        return self.get(job_id)  # the stream ended early: ask once more

    def download(self, output: dict[str, Any]) -> bytes:
        response = self._http.get(output["url"])
        _raise_for(response)
        return response.content

    def generate(
        self, prompt: str = "", *, on_progress: Callable[[ProgressEvent], None] | None = None, **fields: Any
    ) -> GeneratedImages:
        """Submits, waits with live progress, and returns the images; raises if the job did not succeed."""
        job = self.wait(self.submit(prompt=prompt, **fields).id, on_progress)
        if job.state != "succeeded":
            error = job.error or {"code": job.state, "message": f"the job was {job.state}"}
            raise _BY_CODE.get(error["code"], ClientError)(error["code"], error["message"])
        images = [Image.open(io.BytesIO(self.download(o))) for o in job.outputs]
        return GeneratedImages(images, job)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
