"""Settings from ``MONITOR_*`` environment variables, overridable by CLI flags."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from eth_utils import is_address, is_checksum_address, to_checksum_address
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore")

    # Storage: SQLite by default; postgresql+psycopg://... switches with no other change.
    database_url: str = "sqlite:///monitor.db"

    # Collector
    host: str = "127.0.0.1"
    port: int = 8000
    scoring_interval_s: float = Field(15.0, gt=0)
    # Runs are made at fixed times (multiples of the interval), this far behind the clock so the
    # round just observed has arrived; late data replays the runs it concerns, this far back at
    # most (monitor.scoring.job.buckets_due; docs/decentralization.md, "Deterministic scoring").
    scoring_settle_s: float = Field(10.0, ge=0)
    scoring_replay_s: float = Field(300.0, ge=0)
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
    # Registry governance (docs/governance.md): `monitor registry apply` applies only a registry
    # whose hash at least governance_threshold of these addresses signed; none: any registry.
    governance_signers: list[str] = []
    governance_threshold: int | None = Field(None, validate_default=True)

    @field_validator("governance_signers")
    @classmethod
    def _governance_signers(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for address in value:
            mixed_case = address[2:] not in (address[2:].lower(), address[2:].upper())
            if not is_address(address) or (mixed_case and not is_checksum_address(address)):
                raise ValueError(f"{address!r} is not an address (0x + 40 hex, EIP-55 if mixed)")
            out.append(to_checksum_address(address))
        repeated = sorted({a for a in out if out.count(a) > 1})
        if repeated:
            raise ValueError(f"signer {', '.join(repeated)} is listed more than once")
        return out

    @field_validator("governance_threshold")
    @classmethod
    def _governance_threshold(cls, value: int | None, info: ValidationInfo) -> int | None:
        signers = info.data.get("governance_signers")
        if signers is None:  # the signers were refused; that error is enough
            return value
        if not signers and value is not None:
            raise ValueError("a threshold without MONITOR_GOVERNANCE_SIGNERS")
        if signers and value is None:
            raise ValueError(f"required with MONITOR_GOVERNANCE_SIGNERS: k of {len(signers)}")
        if value is not None and not 1 <= value <= len(signers):
            raise ValueError(f"must be between 1 and {len(signers)} (the number of signers)")
        return value

    # Peers (docs/operations.md, "Peers"): other collectors whose signed batches this one pulls
    # (GET /v1/batches), verifies and stores, every sync_interval_s; a JSON list in the env.
    peers: list[str] = []
    sync_interval_s: float = Field(10.0, gt=0)
    peer_timeout_s: float = Field(10.0, gt=0)  # one GET /v1/batches page, whole
    # GET /v1/batches serves a batch only this long after it was stored, so a transaction still
    # committing a lower id is never overtaken by a peer's cursor (monitor.ingest.feed).
    batches_settle_s: float = Field(5.0, ge=0)

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        urls = [check_collector_url(url) for url in value]
        if any("@" in urlsplit(url).netloc for url in urls):
            # peer URLs are metric labels and log lines; GET /v1/batches needs no credentials
            raise ValueError("a peer URL may not carry credentials (user:password@)")
        repeated = sorted({url for url in urls if urls.count(url) > 1})
        if repeated:
            raise ValueError(f"peer {', '.join(repeated)} is listed more than once")
        return urls

    # Probe
    # Every signed batch goes to each of these collectors (a JSON list in the environment);
    # stored without a trailing slash, which is also how the outbox names them.
    collector_urls: list[str] = ["http://127.0.0.1:8000"]
    key_file: Path = Path("probe.key")
    interval_s: float = Field(10.0, gt=0)
    targets_refresh_s: float = Field(60.0, gt=0)
    rpc_timeout_s: float = Field(5.0, gt=0)
    concurrency: int = Field(256, ge=1)
    max_response_bytes: int = Field(1024 * 1024, gt=0)
    # The probe's own /metrics (docs/metrics.md): off unless a port is set (0: any free port).
    probe_metrics_port: int | None = Field(None, ge=0, le=65535)
    probe_metrics_host: str = "127.0.0.1"

    @field_validator("collector_urls")
    @classmethod
    def _collector_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one collector URL is needed")
        urls = [check_collector_url(url) for url in value]
        if any("@" in urlsplit(url).netloc for url in urls):
            # the URLs are metric labels and log lines; a probe authenticates by signing
            raise ValueError("a collector URL may not carry credentials (user:password@)")
        repeated = sorted({url for url in urls if urls.count(url) > 1})
        if repeated:
            raise ValueError(f"collector {', '.join(repeated)} is listed more than once")
        return urls


def check_collector_url(url: str) -> str:
    """A collector base URL without its trailing slash; ValueError unless http(s)://host[...]."""
    stripped = url.strip().rstrip("/")
    try:
        parts = urlsplit(stripped)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"collector URL {url!r} is not like http(s)://host[:port][/path]")
    if parts.query or parts.fragment:
        raise ValueError(f"collector URL {url!r} has a query or fragment; give the base URL")
    return stripped


def parse_window(text: str) -> int:
    """'30s', '5m', '1h', '7d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"window {text!r} is not like 30s, 5m, 1h or 7d")
    return int(text[:-1]) * units[text[-1]]
