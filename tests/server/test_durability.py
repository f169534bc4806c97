"""Jobs end with their images although worker processes and the server itself are SIGKILLed."""

from __future__ import annotations

import io
import json
import os
import signal

from PIL import Image

from tests.server.conftest import wait_for

LONG = {"prompt": "a lighthouse in a storm", "width": 512, "height": 512, "steps": 150, "seed": 7}


def submit(client, **fields) -> str:
    response = client.post("/v1/jobs", json=fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def finished(client, job_id: str) -> dict:
    return wait_for(lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in _TERMINAL and job)


_TERMINAL = {"succeeded", "failed", "canceled"}


def image_at(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


def test_a_job_survives_its_worker_being_killed_mid_job(serve):
    server = serve()
    client = server.client
    job_id = submit(client, **LONG, num_images=2, output_format="png")
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"] is not None)
    victim = next(w for w in server.workers() if w["state"] == "busy")
    os.kill(victim["pid"], signal.SIGKILL)

    job = finished(client, job_id)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    assert [image_at(client, o["url"]).size for o in job["outputs"]] == [(512, 512)] * 2
    assert sorted(p.name for p in (server.data_dir / "blobs" / "outputs" / job_id).iterdir()) == ["0.png", "1.png"]
    restarted = wait_for(lambda: [w for w in server.workers() if w["state"] == "ready"])
    assert restarted[0]["pid"] != victim["pid"]
    assert restarted[0]["restarts"] == 1


def segmind_submit(client, **body) -> dict:
    response = client.post("/v2/kandinsky2.2-txt2img", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_queued_jobs_survive_the_whole_server_being_killed(serve):
    server = serve()
    client = server.client
    running = segmind_submit(client, prompt="a lighthouse", img_width=512, img_height=512, num_inference_steps=150)
    queued = [
        segmind_submit(client, prompt=f"cat {i}", img_width=64, img_height=64, num_inference_steps=5) for i in range(4)
    ]
    wait_for(lambda: client.get(running["status_url"]).json()["status"] == "PROCESSING")
    server.kill()

    again = serve()  # same data dir, new port: poll through the new server
    client = again.client
    for links in [running, *queued]:
        request_id = links["request_id"]
        wait_for(lambda rid=request_id: client.get(f"/v2/requests/{rid}/status").json()["status"] == "COMPLETED")
        result = client.get(f"/v2/requests/{request_id}").json()
        assert image_at(client, result["output"]).format == "JPEG"


def test_sigterm_lets_the_running_job_finish_before_the_server_exits(serve):
    server = serve(KS_DRAIN_SECONDS="60")
    client = server.client
    job_id = submit(client, **{**LONG, "steps": 100})
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"] is not None)
    server.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once its graceful shutdown is complete
    assert server.process.wait(timeout=90) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log.read_text()

    restarted = serve()
    job = restarted.client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded"
    assert job["attempts"] == 1


def test_segmind_v2_round_trip_over_http(serve):
    server = serve()
    client = server.client
    body = {  # seed 000's request, numbers as strings as the old SDK sent them
        "prompt": "an astronaut riding a horse",
        "negative_prompt": "lowres, text",
        "samples": "1",
        "num_inference_steps": "6",
        "prior_steps": 3,
        "img_width": 512,
        "img_height": 768,
        "seed": 1024,
        "base64": False,
    }
    submitted = client.post("/v2/kandinsky2.2-txt2img", json=body)
    assert submitted.status_code == 200, submitted.text
    links = submitted.json()
    assert links["status"] == "QUEUED"
    assert links["status_url"].startswith(server.url) and links["response_url"].startswith(server.url)

    wait_for(lambda: client.get(links["status_url"]).json()["status"] == "COMPLETED")
    result = client.get(links["response_url"]).json()
    assert result["status"] == "COMPLETED"
    assert result["metrics"]["inference_time"] > 0
    picture = image_at(client, result["output"])
    assert (picture.format, picture.size) == ("JPEG", (512, 768))


def test_segmind_errors_name_the_field_in_segmind_terms(serve):
    client = serve().client
    bad = client.post("/v2/kandinsky2.2-txt2img", json={"prompt": "x", "img_width": 100000})
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("img_width")
    missing = client.get("/v2/requests/nope/status")
    assert missing.status_code == 404
    assert "error" in missing.json()


def test_cancel_a_queued_job_at_once_and_a_running_one_within_a_step(serve):
    client = serve().client
    running = submit(client, **{**LONG, "steps": 400})
    queued = submit(client, prompt="never drawn", width=64, height=64, steps=5)
    wait_for(lambda: client.get(f"/v1/jobs/{running}").json()["progress"] is not None)

    assert client.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "canceled"
    client.post(f"/v1/jobs/{running}/cancel")
    job = finished(client, running)
    assert job["state"] == "canceled"
    assert job["outputs"] == []
    after = finished(client, submit(client, prompt="still working", width=64, height=64, steps=5))
    assert after["state"] == "succeeded"


def test_compatible_jobs_queued_together_run_as_one_batch(serve):
    client = serve(KS_MAX_BATCH="4").client
    blocker = submit(client, **LONG)
    wait_for(lambda: client.get(f"/v1/jobs/{blocker}").json()["state"] == "running")
    batch = [submit(client, prompt=p, width=64, height=64, steps=5, seed=i) for i, p in enumerate("abcd")]
    for job_id in batch:
        job = finished(client, job_id)
        assert job["state"] == "succeeded"
        assert "running in a batch of 4" in job["logs"]


def test_retention_removes_inputs_and_outputs_but_keeps_the_record(serve, photo):
    client = serve(KS_RETENTION_SECONDS="1").client
    import base64

    job_id = submit(
        client, task="img2img", image=base64.b64encode(photo).decode(), strength=0.5, width=64, height=64, steps=4
    )
    url = finished(client, job_id)["outputs"][0]["url"]
    job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["data_removed"] and j, timeout=30)
    assert job["state"] == "succeeded"
    assert job["outputs"] == []
    assert client.get(url).status_code == 404


def test_readyz_reports_each_worker_and_json_logs_carry_job_ids(serve):
    server = serve(KS_LOG_FORMAT="json")
    ready = server.client.get("/readyz").json()
    assert ready["ready"] is True
    assert ready["model"] == "tiny"
    [worker] = ready["workers"]
    assert worker["device"] == "cpu" and worker["state"] == "ready" and worker["pid"] > 0

    job_id = submit(server.client, prompt="a fox", width=64, height=64, steps=2)
    finished(server.client, job_id)
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(job_id in r.get("job_ids", ()) and r["process"].startswith("worker") for r in records)
