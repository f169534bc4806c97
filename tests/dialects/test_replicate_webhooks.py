"""Replicate webhooks: signed with the caller's secret, the final one retried until accepted."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import replicate
from replicate.webhook import InvalidSignatureError

V22 = "ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2, "num_inference_steps_prior": 2}


class Receiver:
    """A webhook endpoint on 127.0.0.1 that refuses its first `fail_first` deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                refuse = receiver.fail_first > 0
                receiver.fail_first -= 1
                receiver.received.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if refuse else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?ref=42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 60) -> tuple[dict[str, str], bytes]:
        return self.received.get(timeout=timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(fail_first=1)
    yield made
    made.server.shutdown()


def test_webhooks_arrive_signed_and_the_final_one_is_retried(serve, receiver):
    server = serve(KS_ALLOW_PRIVATE_URLS="true")
    local = replicate.Client(api_token=None, base_url=server.url)
    secret = local.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    prediction = local.predictions.create(
        version=V22, input=SMALL, webhook=receiver.url, webhook_events_filter=["completed"]
    )
    deliveries = [receiver.next() for _ in range(2)]  # refused, then retried about a second later
    assert [json.loads(body)["status"] for _, body in deliveries] == ["succeeded", "succeeded"]
    (first_headers, _), (retry_headers, final_body) = deliveries
    assert first_headers["webhook-id"] == retry_headers["webhook-id"]  # one message, tried twice
    for headers, body in deliveries:  # validate raises on a bad signature
        local.webhooks.validate(headers=headers, body=body.decode(), secret=secret, tolerance=60)
    with pytest.raises(InvalidSignatureError):
        local.webhooks.validate(headers=retry_headers, body=final_body.decode() + " ", secret=secret)
    final = json.loads(final_body)
    assert final["id"] == prediction.id and len(final["output"]) == 1
    assert receiver.received.empty()


def test_the_body_asks_for_webhooks_as_replicate_filters_them():
    from kandinsky_serve.api.dialects.replicate.webhooks import retry_delay, subscriptions
    from kandinsky_serve.domain.errors import ServeError
    from kandinsky_serve.domain.job import Webhook, WebhookEvent

    checked: list[tuple[str, str]] = []

    def check(url: str, field: str) -> None:
        checked.append((url, field))

    body = {"webhook": "https://a.example/h", "webhook_completed": "https://b.example/c"}
    assert subscriptions(body, check) == (
        Webhook(url="https://a.example/h", events=frozenset({WebhookEvent.OUTPUT, WebhookEvent.COMPLETED})),
        Webhook(url="https://b.example/c", events=frozenset({WebhookEvent.COMPLETED})),
    )
    assert checked == [("https://a.example/h", "webhook"), ("https://b.example/c", "webhook_completed")]
    only_start = subscriptions({"webhook": "https://a.example/h", "webhook_events_filter": ["start"]}, check)
    assert only_start[0].events == {WebhookEvent.START}
    with pytest.raises(ServeError) as bad:
        subscriptions({"webhook": "https://a.example/h", "webhook_events_filter": ["finished"]}, check)
    assert bad.value.field == "webhook_events_filter"
    assert subscriptions({}, check) == ()
    # `completed` is retried 1 s, 2 s, 4 s ... after each failure, at most 5 minutes apart
    assert [retry_delay(n) for n in (1, 2, 3, 9, 10, 50)] == [1.0, 2.0, 4.0, 256.0, 300.0, 300.0]
