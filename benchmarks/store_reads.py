"""What reading a job with a large input image costs the job store: time of a `get`, and memory of lists.

    .venv/bin/python benchmarks/store_reads.py --backend sqlite
    .venv/bin/python benchmarks/store_reads.py --backend redis   # starts a redis-server of its own

Enqueues one text job and ten jobs whose img2img input is a noise PNG of about 18 MiB (noise does not
compress), then times `get` of each kind (median of --reads, time.perf_counter) and lists the ten
jobs from 8 threads at once, reporting the process's resident memory before, at its peak (VmHWM,
reset just before the lists through /proc/self/clear_refs) and after. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.store.protocol import JobStore

MIB = 1024 * 1024


def noise_png(width: int = 2048, height: int = 2304) -> bytes:
    image = Image.frombytes("RGBA", (width, height), os.urandom(width * height * 4))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def median_ms(action: object, reads: int) -> float:
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(store: JobStore, reads: int, jobs: int, threads: int) -> dict[str, float]:
    picture = noise_png()
    image_request = GenerationRequest(task="img2img", prompt="a fox", image=picture, seed=1)
    text_job = store.enqueue(Job(owner="text", request=GenerationRequest(prompt="a fox", seed=1)))
    big = [store.enqueue(Job(owner="alice", request=image_request)).id for _ in range(jobs)]
    del image_request
    gc.collect()
    result = {
        "input_mib": round(len(picture) / MIB, 2),
        "get_text_ms": round(median_ms(lambda: store.get(text_job.id), reads), 3),
        "get_image_ms": round(median_ms(lambda: store.get(big[0]), reads), 3),
    }
    gc.collect()
    before = rss_mib()
    reset_peak()
    with ThreadPoolExecutor(threads) as pool:
        pages = list(pool.map(lambda _: store.list_jobs("alice", limit=jobs), range(threads)))
    assert all(len(page.jobs) == jobs for page in pages)
    peak = rss_mib("VmHWM")
    del pages
    gc.collect()
    after = rss_mib()
    result |= {"rss_before_mib": round(before, 1), "rss_peak_mib": round(peak, 1), "rss_after_mib": round(after, 1)}
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            from kandinsky_serve.store.sqlite import SqliteJobStore

            store: JobStore = SqliteJobStore(Path(tmp) / "jobs.db")
            server = None
        else:
            from kandinsky_serve.store.redis import RedisJobStore

            port = free_port()
            executable = shutil.which("redis-server") or "redis-server"
            server = subprocess.Popen(
                [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            store = RedisJobStore(f"redis://127.0.0.1:{port}/0", prefix="bench")
        try:
            result = measure(store, args.reads, args.jobs, args.threads)
        finally:
            store.close()
            if server is not None:
                server.terminate()
                server.wait()
    print(json.dumps({"backend": args.backend, **result}))


if __name__ == "__main__":
    main()
