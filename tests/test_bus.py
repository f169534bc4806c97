"""The bus carries the supervisor pipe's messages as JSON; every one must come back as it was sent."""

import json

import pytest

from kandinsky_serve.bus import decode, encode
from kandinsky_serve.domain import ProgressEvent, Stage
from kandinsky_serve.worker.messages import BatchDone, Cancel, JobsChanged, Progress, StateChanged, Wake, WorkerState

MESSAGES = [
    StateChanged(WorkerState.BUSY, "cuda:1", ""),
    JobsChanged(("a", "b")),
    Progress(("a",), ProgressEvent(Stage.DECODER, 3, 25), 0.031, (("a", "data:image/jpeg;base64,AAAA"),)),
    BatchDone(2, 4, 1.5, "succeeded", "cuda:0", 123456, (1.2, 3.4)),
    Wake(),
    Cancel("a"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_survive_the_bus(message):
    assert decode(json.loads(json.dumps(encode(message)))) == message
