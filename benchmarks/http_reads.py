"""Status reads and lists of jobs with ~18 MiB input images, through HTTP on a real `serve` (tiny model).

    .venv/bin/python benchmarks/http_reads.py

Prints the median round trip of a status read for a text job and for an 18 MiB img2img job, and the API
process's resident memory before, during and after 8 concurrent clients list 11 such jobs 3 times each.
(`benchmarks/store_reads.py` measures the same below HTTP, per store backend.)
"""

import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

data = Path(tempfile.mkdtemp()) / "data"
port = int(os.environ.get("PORT", "8931"))
env = {**os.environ, "HF_HUB_OFFLINE": "1", "KS_MODELS": "tiny", "KS_DATA_DIR": str(data), "KS_PORT": str(port)}
proc = subprocess.Popen(
    [sys.executable, "-m", "kandinsky_serve", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
)
url = f"http://127.0.0.1:{port}"
try:
    for _ in range(240):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (2304, 2048, 4), dtype=np.uint8), "RGBA").save(
        buf, format="PNG", compress_level=0
    )
    png = buf.getvalue()
    print(f"input {len(png) / 2**20:.2f} MiB")
    b64 = base64.b64encode(png).decode()
    c = httpx.Client(base_url=url, timeout=120)
    text = c.post("/v1/jobs", json={"prompt": "x", "width": 64, "height": 64, "steps": 1, "prior_steps": 1}).json()[
        "id"
    ]
    ids = []
    for _ in range(10):
        r = c.post(
            "/v1/jobs",
            json={
                "task": "img2img",
                "prompt": "x",
                "image": b64,
                "width": 64,
                "height": 64,
                "steps": 2,
                "prior_steps": 1,
                "strength": 0.5,
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    def med(path):
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            assert c.get(path).status_code == 200
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1000

    print(
        f"status read: text job {med(f'/v1/jobs/{text}'):.2f} ms, "
        f"18 MiB img2img job {med(f'/v1/jobs/{ids[0]}'):.2f} ms (median of 20, HTTP round trip)"
    )

    def rss():
        return (
            int(
                next(
                    line
                    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS")
                ).split()[1]
            )
            / 1024
        )

    before = rss()
    peak = [before]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)

    w = threading.Thread(target=watch)
    w.start()

    def lists():
        for _ in range(3):
            assert httpx.get(f"{url}/v1/jobs?limit=11", timeout=120).status_code == 200

    ts = [threading.Thread(target=lists) for _ in range(8)]
    t0 = time.perf_counter()
    [t.start() for t in ts]
    [t.join() for t in ts]
    took = time.perf_counter() - t0
    stop.set()
    w.join()
    print(
        f"8 concurrent clients x 3 lists of 11 jobs: {took:.2f} s; "
        f"API process RSS {before:.0f} MiB before, peak {peak[0]:.0f}, after {rss():.0f} MiB"
    )
finally:
    proc.terminate()
    proc.wait(30)
