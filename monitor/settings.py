"""Settings from ``MONITOR_*`` environment variables, overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    # Storage: SQLite by default; postgresql+psycopg://... switches with no other change.
    database_url: str = "sqlite:///monitor.db"

    # Collector
    host: str = "127.0.0.1"
    port: int = 8000
    scoring_interval_s: float = Field(15.0, gt=0)
    # Windows the scoring job precomputes; the first one is the default and drives /v1/weights.
    windows: list[str] = ["5m", "1h"]
    # /v1/scores and /v1/weights answers are served from memory and checked against the database
    # (a newer run? chain deactivated?) at most this often; this process's own changes show at
    # once (monitor.scoring.answers). 0: check on every request.
    answers_ttl_s: float = Field(1.0, ge=0)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window is needed")
        seconds = [parse_window(w) for w in value]  # ValueError names the bad one
        if len(set(seconds)) != len(seconds):
            raise ValueError(f"windows {value} name the same length twice")
        return value

    clock_skew_s: float = Field(60.0, ge=0)  # a batch dated further in the future is rejected
    request_skew_s: float = Field(300.0, ge=0)  # signed /v1/targets requests
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_results_per_batch: int = Field(20_000, gt=0)
    # SLA (docs/sla.md): rollups, breach events and their webhook, retention.
    rollup_interval_s: float = Field(15.0, gt=0)
    breach_window_s: int = Field(3600, ge=60)  # breach events judge this rolling window
    webhook_url: str | None = None  # receives breach_started / breach_ended as JSON
    webhook_timeout_s: float = Field(5.0, gt=0)
    retention_days: float = Field(14.0, gt=0)  # raw results and batches (unless attested)
    minute_rollup_retention_days: float = Field(35.0, gt=0)
    hour_rollup_retention_days: float = Field(400.0, gt=0)
    attest_daily: bool = True  # sign each subject's attestation of every UTC day once it ends
    # The collector's own key: signs /v1/weights; created on first start (docs/operations.md).
    service_key_file: Path = Path("collector.key")
    # Bearer token for the admin endpoints (POST /v1/attestations); unset: they answer 403.
    admin_token: str | None = None

    # Probe
    collector_url: str = "http://127.0.0.1:8000"
    key_file: Path = Path("probe.key")
    interval_s: float = Field(10.0, gt=0)
    targets_refresh_s: float = Field(60.0, gt=0)
    rpc_timeout_s: float = Field(5.0, gt=0)
    concurrency: int = Field(256, ge=1)
    max_response_bytes: int = Field(1024 * 1024, gt=0)
    # The probe's own /metrics (docs/metrics.md): off unless a port is set (0: any free port).
    probe_metrics_port: int | None = Field(None, ge=0, le=65535)
    probe_metrics_host: str = "127.0.0.1"


def parse_window(text: str) -> int:
    """'30s', '5m', '1h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"window {text!r} is not like 30s, 5m, 1h or 7d")
    return int(text[:-1]) * units[text[-1]]
