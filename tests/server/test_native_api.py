"""The native API over a real socket: waiting, live progress, listing, errors."""

from __future__ import annotations

import base64
import io
import json

import httpx
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

SMALL = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 20, "seed": 3}


def test_native_api(serve):
    server = serve()
    client = server.client

    # ?wait returns the finished job, with its seed and an output of the requested size
    done = client.post("/v1/jobs?wait=60", json={**SMALL, "num_images": 2, "output_format": "png"}).json()
    assert done["state"] == "succeeded"
    assert [o["seed"] for o in done["outputs"]] == [3, 4]
    url = done["outputs"][1]["url"]
    assert httpx.get(url).headers["content-type"] == "image/png"  # signed links need no key
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 404  # tampered
    assert httpx.get(url.split("?")[0]).status_code == 404  # unsigned

    # a server-chosen seed is reported back
    chosen = client.post("/v1/jobs?wait=60", json={"prompt": "x", "width": 64, "height": 64, "steps": 2}).json()
    assert chosen["request"]["seed"] == chosen["outputs"][0]["seed"]

    # live progress as server-sent events, then the final job
    job_id = client.post("/v1/jobs", json={**SMALL, "steps": 40}).json()["id"]
    events = []
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job_id}/events", timeout=60) as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if name == "done":
                    break
    steps = [data["step"] for name, data in events if name == "progress" and data["stage"] == "decoder"]
    # every step from the first one seen (the stream may begin mid-job), none skipped or repeated
    assert steps and steps == list(range(steps[0], 41))
    previews = [data["preview"] for name, data in events if name == "progress" and "preview" in data]
    assert previews, "the decoder's progress carries previews"
    header, _, payload = previews[0].partition(",")
    assert header == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "JPEG"
    assert events[-1][0] == "done" and events[-1][1]["state"] == "succeeded"

    # newest first, in pages that follow the cursor
    first = client.get("/v1/jobs?limit=2").json()
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}").json()
    ids = [j["id"] for j in first["jobs"] + second["jobs"]]
    assert ids[0] == job_id and len(set(ids)) == 3

    # Prometheus metrics, valid text, counting what just ran
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    assert families["ks_images_generated"].samples[0].value == 4  # 2 + 1 + 1 above
    assert {s.labels["state"]: s.value for s in families["ks_jobs"].samples}["succeeded"] >= 3
    decoder_steps = [s for s in families["ks_step_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["stage"] == "decoder" and s.value > 0 for s in decoder_steps)
    assert "ks_queue_depth" in families and "ks_batch_size" in families
    jobs_count = [s for s in families["ks_job_seconds"].samples if s.name.endswith("_count")]
    assert jobs_count[0].value >= 3

    # bad input: 422 in the native error shape, naming the field
    bad = client.post("/v1/jobs", json={**SMALL, "width": 100000})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "width"
    assert bad.json()["error"]["message"].startswith("width")
    missing = client.post("/v1/jobs", json={**SMALL, "task": "img2img"}).json()["error"]
    assert missing["field"] == "image"
    assert missing["message"] == "image is required for task img2img"
    assert client.get("/v1/jobs/unknown").status_code == 404
    assert client.get("/v1/files/outputs/unknown/0.png").status_code == 404


def test_oversized_bodies_are_refused_in_the_callers_dialect(serve):
    client = serve(KS_MAX_BODY_BYTES="100000").client
    padding = "x" * 200_000
    native = client.post("/v1/jobs", json={"prompt": "a", "negative_prompt": padding})
    assert native.status_code == 413
    assert native.json()["error"]["code"] == "payload_too_large"
    segmind = client.post("/v2/kandinsky2.2-txt2img", json={"prompt": padding})
    assert segmind.status_code == 413
    assert "larger than" in segmind.json()["error"]
    assert client.get("/no/such/route").status_code == 404
