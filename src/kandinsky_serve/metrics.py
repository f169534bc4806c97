"""Prometheus metrics of the serving process.

Workers report over their pipes (step and batch timings, GPU memory); queue depth and jobs by
state are read from the store when Prometheus scrapes, so they are right after a restart too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kandinsky_serve.domain.job import JobState
from kandinsky_serve.worker.messages import BatchDone, Progress, ToSupervisor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)


class _StoreCollector(Collector):
    def __init__(self, counts: Callable[[], dict[JobState, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.counts()
        depth = GaugeMetricFamily("ks_queue_depth", "Jobs waiting for a worker")
        depth.add_metric([], counts.get(JobState.QUEUED, 0))
        yield depth
        jobs = GaugeMetricFamily("ks_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs


class Metrics:
    def __init__(self, counts: Callable[[], dict[JobState, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(counts))
        self.steps = Histogram(
            "ks_step_seconds", "Time of one denoising step", ["stage"], buckets=_STEP_BUCKETS, registry=self.registry
        )
        self.batches = Histogram(
            "ks_batch_seconds", "Time to run one batch, outputs stored", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.jobs_latency = Histogram(
            "ks_job_seconds", "Time from a job's submission to its end", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "ks_batch_size", "Jobs per batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry
        )
        self.batch_outcomes = Counter("ks_batches", "Batches run, by outcome", ["outcome"], registry=self.registry)
        self.images = Counter("ks_images_generated", "Images generated", registry=self.registry)
        self.gpu_memory = Gauge(
            "ks_gpu_memory_peak_bytes",
            "GPU memory high-water mark of the last batch",
            ["device"],
            registry=self.registry,
        )

    def observe(self, message: ToSupervisor) -> None:
        if isinstance(message, Progress) and message.seconds > 0:
            self.steps.labels(message.event.stage.value).observe(message.seconds)
        elif isinstance(message, BatchDone):
            self.batches.observe(message.seconds)
            for seconds in message.job_seconds:
                self.jobs_latency.observe(seconds)
            self.batch_size.observe(message.size)
            self.batch_outcomes.labels(message.outcome).inc()
            self.images.inc(message.images)
            if message.peak_memory_bytes:
                self.gpu_memory.labels(message.device).set(message.peak_memory_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
