"""While Redis is down, every dialect answers 503 with Retry-After in its own error shape (never a
plain-text 500), and the same node serves again as soon as Redis is back."""

from __future__ import annotations

import httpx

TXT = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}

# (method, path, body, how the dialect's error body looks)
ROUTES = [
    ("POST", "/v1/jobs", TXT, lambda body: body["error"]["code"] == "unavailable"),
    ("GET", "/v1/jobs", None, lambda body: body["error"]["code"] == "unavailable"),
    ("POST", "/v2/kandinsky2.2-txt2img", {"prompt": "a fox"}, lambda body: "job store" in body["error"]),
    (
        "POST",
        "/v1/models/ai-forever/kandinsky-2.2/predictions",
        {"input": {"prompt": "a fox"}},
        lambda body: body["status"] == 503 and body["title"] == "Service unavailable",
    ),
    (
        "POST",
        "/v1/images/generations",
        {"prompt": "a fox", "model": "kandinsky-2.2"},
        lambda body: body["error"]["type"] == "server_error" and body["error"]["code"] == "service_unavailable",
    ),
    (
        "POST",
        "/v1/prediction/",
        {"model": "kandinsky-2-2", "version": "0.0.1", "input": {"prompt": "a fox"}},
        lambda body: "job store" in body["error"],
    ),
]


def test_a_redis_outage_is_a_503_with_retry_after_in_each_dialects_shape(cluster):
    api = cluster.api("api-1")
    assert httpx.get(f"{api.url}/v1/jobs", timeout=10).status_code == 200

    cluster.redis.stop()
    for method, path, body, shaped in ROUTES:
        response = httpx.request(method, f"{api.url}{path}", json=body, timeout=30)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert int(response.headers["retry-after"]) > 0, path
        assert shaped(response.json()), (path, response.text)

    cluster.redis.start()
    response = httpx.post(f"{api.url}/v1/jobs", json=TXT, timeout=30)
    assert response.status_code == 201, response.text
