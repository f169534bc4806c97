"""N concurrent clients through the HTTP API of a real `serve` process, against the bare engine.

Each client submits its jobs one after another through the native API and waits for each
(`?wait=`); latency is submit to result. The server's overhead per job comes from pairs: the same
request run on a bare engine in this process, then at once through the server, again and again; the
overhead is the median of each pair's difference, so that a shared machine's drift (which moved the
bare engine's own time by 2x between runs here) falls on both halves of a pair alike. With
one client, each latency is also split by the job's own timestamps: submit to queued, queued to
started (waiting for a worker), started to completed (generating, encoding, storing), completed to
the response in the client's hands.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.engine import Engine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    model: str, data_dir: Path, max_batch: int, device: str = "cpu", dtype: str = "auto"
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "KS_MODELS": model, "KS_DATA_DIR": str(data_dir), "KS_PORT": str(port)}
    env |= {"KS_MAX_BATCH": str(max_batch), "KS_PREVIEWS": "0", "KS_RATE_LIMIT_PER_MINUTE": "0"}
    env |= {"KS_MAX_JOBS_PER_KEY": "1000", "KS_DEVICE": device, "KS_DTYPE": dtype}
    process = subprocess.Popen(
        [sys.executable, "-m", "kandinsky_serve", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise RuntimeError("the server did not become ready")


_PHASES = ("submit_s", "queued_s", "run_s", "respond_s")
_TIMES = ("created_at", "started_at", "completed_at")


def _phases(sent: float, received: float, job: dict[str, Any]) -> tuple[float, ...]:
    """One job's latency split at its created, started and completed times (wall clock, one machine)."""
    created, started, completed = (datetime.fromisoformat(job[k]).timestamp() for k in _TIMES)
    return created - sent, started - created, completed - started, received - completed


def _load(
    url: str, body: dict[str, Any], clients: int, jobs: int, phases: list[tuple[float, ...]] | None = None
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for _ in range(jobs):
                start, sent = time.perf_counter(), time.time()
                job = http.post("/v1/jobs?wait=600", json=body).json()
                received = time.time()
                if job.get("state") != "succeeded":
                    raise RuntimeError(f"a benchmark job did not succeed: {job}")
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if phases is not None:
                        phases.append(_phases(sent, received, job))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    model: str,
    size: int,
    steps: int,
    clients: list[int],
    jobs: int,
    max_batch: int,
    device: str = "cpu",
    dtype: str = "auto",
    restart: bool = False,
) -> dict[str, Any]:
    """The server and its bare engine on the same device (on CUDA both hold the model on one GPU).
    Also the start: seconds from launching `serve` to ready (model loaded, KS_WARMUP's buckets run) and
    to its first image of `size`; with `restart`, again for a second start on the same data dir (a
    warm compile cache), as a restarted worker would."""
    body = {"prompt": "a moss covered astronaut", "width": size, "height": size, "steps": steps, "seed": 1}
    engine = Engine.create(model, device, dtype)
    request = GenerationRequest.model_validate({**body, "model": model})
    engine.run(request)  # warm up
    rows = []
    split: list[tuple[float, ...]] = []
    starts: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as data_dir:
        launched = time.perf_counter()
        process, url = _start(model, Path(data_dir), max_batch, device, dtype)
        try:
            ready = time.perf_counter()
            _load(url, body, 1, 1)  # warm the worker up
            starts.append(_start_times(launched, ready))
            for count in clients:
                latencies, elapsed = _load(url, body, count, jobs, split if count == 1 else None)
                rows.append(
                    {
                        "clients": count,
                        "jobs": len(latencies),
                        "jobs_per_s": round(len(latencies) / elapsed, 3),
                        "p50_s": round(_percentile(latencies, 0.5), 4),
                        "p99_s": round(_percentile(latencies, 0.99), 4),
                    }
                )
            bare, through_server = _pairs(url, body, engine, request, max(jobs, 8))
        finally:
            process.terminate()
            process.wait(timeout=120)
        if restart:
            launched = time.perf_counter()
            process, url = _start(model, Path(data_dir), max_batch, device, dtype)
            try:
                ready = time.perf_counter()
                _load(url, body, 1, 1)
                starts.append(_start_times(launched, ready))
            finally:
                process.terminate()
                process.wait(timeout=120)
    return {
        "benchmark": "server",
        "model": model,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "date": datetime.now(UTC).date().isoformat(),
        "size": size,
        "steps": steps,
        "max_batch": max_batch,
        "engine_s_per_job": round(statistics.median(bare), 4),
        "server_overhead_s_per_job": round(
            statistics.median(s - b for s, b in zip(through_server, bare, strict=True)), 4
        ),
        "one_client_phases_p50": {
            name: round(statistics.median(job[i] for job in split), 4) for i, name in enumerate(_PHASES)
        }
        if split
        else None,
        "rows": rows,
        "start": starts[0],
        "restart": starts[1] if restart else None,
    }


def _start_times(launched: float, ready: float) -> dict[str, float]:
    return {"ready_s": round(ready - launched, 2), "first_image_s": round(time.perf_counter() - launched, 2)}


def _pairs(
    url: str, body: dict[str, Any], engine: Engine, request: GenerationRequest, count: int
) -> tuple[list[float], list[float]]:
    """Seconds for the request on the bare engine and, right after, through the server; count times."""
    bare, through_server = [], []
    with httpx.Client(base_url=url, timeout=600) as http:
        for _ in range(count):
            start = time.perf_counter()
            engine.run(request)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            job = http.post("/v1/jobs?wait=600", json=body).json()
            through_server.append(time.perf_counter() - start)
            if job.get("state") != "succeeded":
                raise RuntimeError(f"a benchmark job did not succeed: {job}")
    return bare, through_server


def table(result: dict[str, Any]) -> str:
    lines = [
        f"server benchmark: {result['model']} on {result['device']} at {result['size']}², {result['steps']} steps, "
        f"max batch "
        f"{result['max_batch']}; bare engine {result['engine_s_per_job']:.3f} s/job, server adds "
        f"{result['server_overhead_s_per_job'] * 1000:.0f} ms/job (median of paired runs)",
        f"{'clients':>8} {'jobs':>5} {'jobs/s':>8} {'p50 s':>8} {'p99 s':>8}",
    ]
    for r in result["rows"]:
        lines.append(f"{r['clients']:>8} {r['jobs']:>5} {r['jobs_per_s']:>8.2f} {r['p50_s']:>8.3f} {r['p99_s']:>8.3f}")
    if result.get("one_client_phases_p50"):
        phases = ", ".join(
            f"{k.removesuffix('_s')} {v * 1000:.1f} ms" for k, v in result["one_client_phases_p50"].items()
        )
        lines.append(f"one client, p50 of each phase: {phases}")
    for name in ("start", "restart"):
        if result.get(name):
            times = result[name]
            lines.append(f"{name}: ready in {times['ready_s']:.1f} s, first image in {times['first_image_s']:.1f} s")
    return "\n".join(lines)
