"""One Settings object, read from KS_* environment variables (and .env), passed down explicitly.

Every CLI flag that configures the server has an environment variable of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KS_", env_file=".env", extra="ignore")

    model: str = Field(
        default="kandinsky-2.2",
        description="the one model served when KS_MODELS is not set: a model id (see `kandinsky-serve models`) or a "
        "local folder",
    )
    models: str | None = Field(
        default=None,
        description="comma-separated models this deployment serves (ids or local folders), e.g. tiny,tiny-2.1; the "
        "first is the default for requests that name none; default: KS_MODEL",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    dtype: str = Field(default="auto", description="auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32")
    compile: Literal["off", "unet", "all"] = Field(
        default="off",
        description="off, unet (torch.compile the decoder UNets) or all (also the MoVQ decoder); for GPUs: "
        "slow first run, kernels cached in data_dir/compile-cache",
    )
    channels_last: bool | None = Field(
        default=None,
        description="channels_last (NHWC) weights and latents for the UNets and MoVQ; default: on a GPU when compile "
        "is on (cuDNN and inductor's GroupNorm then run NHWC without layout conversions), else off",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="on a GPU, replay each denoising step (prior and decoder) as a CUDA graph, one per batch size and "
        "image size, captured the first time that shape runs (or at warm-up)",
    )
    warmup: str = Field(
        default="auto",
        description="shape buckets a worker runs once before it reports ready (CUDA graphs captured, kernels "
        "compiled): auto, off, or sizes and batch sizes such as `768x768:1,8 512:1`; auto is 512x512 and 768x768 at "
        "1 and max_batch images on a GPU, nothing on a CPU unless compile is on",
    )
    data_dir: Path = Field(default=Path("data"), description="where jobs, inputs and outputs are kept")
    store_url: str | None = Field(
        default=None, description="redis://host:6379/0 to keep jobs and outputs in Redis; default: SQLite in data_dir"
    )
    redis_prefix: str = Field(default="ks", description="prefix of every Redis key (use {ks} on a Redis Cluster)")
    log_format: Literal["text", "json"] = Field(default="text", description="text, or json: one object a line")
    host: str = Field(default="127.0.0.1", description="address the API listens on (0.0.0.0 to accept others)")
    port: int = Field(default=8000, ge=0, le=65535, description="port the API listens on")
    public_url: str | None = Field(
        default=None, description="base URL clients reach this server at, for absolute URLs (default: from the request)"
    )
    workers: int = Field(
        default=0, ge=0, description="worker processes per served model; 0 = one per GPU, or one on a CPU machine"
    )
    max_batch: int = Field(default=4, ge=1, le=32, description="most jobs one worker runs as one batch")
    batch_window_ms: int = Field(
        default=0,
        ge=0,
        description="how long an idle worker waits for a batch to fill (jobs that queue while it runs batch anyway)",
    )
    previews: int = Field(
        default=8, ge=0, le=50, description="intermediate previews a job's progress carries (0: none)"
    )
    lease_seconds: float = Field(default=30.0, gt=0, description="a worker's hold on its jobs, renewed by heartbeats")
    max_attempts: int = Field(default=3, ge=1, description="tries before a job whose worker keeps dying fails")
    drain_seconds: float = Field(default=30.0, ge=0, description="on shutdown, how long a running batch may finish")
    retention_seconds: float = Field(default=3600.0, gt=0, description="how long inputs and outputs are kept")
    max_queue: int = Field(default=1000, ge=1, description="queued jobs beyond which new work is refused (503)")
    require_keys: bool | None = Field(
        default=None,
        description=(
            "require an API key; default: once any key has been created (revoked ones too), or when listening "
            "beyond 127.0.0.1; false accepts any key or none"
        ),
    )
    public_probes: bool = Field(
        default=False,
        description="let /readyz and /metrics (worker pids, hosts, queue depth) answer without an API key where keys "
        "are required; /healthz always does",
    )
    rate_limit_per_minute: int = Field(default=60, ge=0, description="jobs a key may submit a minute (0: no limit)")
    max_jobs_per_key: int = Field(default=10, ge=1, description="queued + running jobs a key may have at once")
    allow_private_urls: bool = Field(
        default=False, description="let input URLs and webhooks reach loopback, private and link-local addresses"
    )
    fetch_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="overall deadline for fetching a request's input image URLs (every hop, lookup and byte), "
        "and for one webhook delivery",
    )
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="largest request body accepted")
    max_input_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="largest input image accepted")
    url_secret: str | None = Field(
        default=None, description="key that signs output URLs; default: a random one kept in the data dir"
    )
    credits_per_unit: float = Field(
        default=1.0, ge=0, description="credits one 512x512 image with 50 decoder steps costs"
    )

    @property
    def served_models(self) -> list[str]:
        """The models served, as configured (KS_MODELS, else KS_MODEL); the first is the default."""
        listed = [name.strip() for name in (self.models or "").split(",") if name.strip()]
        return list(dict.fromkeys(listed)) or [self.model]

    @property
    def database_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
