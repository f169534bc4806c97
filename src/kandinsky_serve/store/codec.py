"""How job stores keep a Job as JSON: in two parts, and with input images that expiry can remove.

The request, which may carry megabytes of base64 images, is stored apart from the rest of the job,
so that the many small changes of a job's life rewrite a few hundred bytes, not its images. Any
backend (SQLite, Redis) can use these functions and stay compatible with the others' data.
"""

from __future__ import annotations

import json

from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import FuseItem, GenerationRequest, Task

# stands in for the request while a transition edits the rest of a job; never stored
_NO_REQUEST = GenerationRequest.model_construct()


def job_json(job: Job) -> str:
    """The job without its request."""
    return job.model_dump_json(exclude={"request"})


def load_job(text: str, request: GenerationRequest | None = None) -> Job:
    """The job from job_json(); without `request`, a placeholder request that must not be used,
    which is all a state transition needs."""
    # the request goes in after validation: Job's validation would run the request's validators
    # again, which refuse a request whose images expiry removed
    job = Job.model_validate({**json.loads(text), "request": _NO_REQUEST})
    return job if request is None else job.model_copy(update={"request": request})


def load_request(text: str, *, data_removed: bool) -> GenerationRequest:
    """A request from its JSON. Once its images are removed the validators would demand them back
    (an img2img without its image), so the rest is validated as a text2img and the task restored."""
    if not data_removed:
        return GenerationRequest.model_validate_json(text)
    data = json.loads(text)
    fuse = tuple(
        FuseItem.model_validate(item) if item["prompt"] is not None else FuseItem.model_construct(**item)
        for item in data.pop("fuse", ())
    )
    checked = GenerationRequest.model_validate({**data, "task": Task.TEXT2IMG.value})
    return checked.model_copy(update={"task": Task(data["task"]), "fuse": fuse})


def strip_request(text: str) -> str:
    """The request JSON without its input images. Fuse items keep their place and weight, and one that
    was an image is left with neither prompt nor image."""
    data = json.loads(text)
    data.update(image=None, mask=None, hint=None)
    data["fuse"] = [{**item, "image": None} for item in data.get("fuse", ())]
    return json.dumps(data)
