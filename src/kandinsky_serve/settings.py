"""One Settings object, read from KS_* environment variables (and .env), passed down explicitly.

Every CLI flag that configures the server has an environment variable of the same name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KS_", env_file=".env", extra="ignore")

    model: str = Field(default="kandinsky-2.2", description="model id (see `kandinsky-serve models`) or a local folder")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    dtype: str = Field(default="auto", description="auto (fp16 on CUDA, fp32 on CPU), fp16, bf16 or fp32")
    data_dir: Path = Field(default=Path("data"), description="where jobs, inputs and outputs are kept")
