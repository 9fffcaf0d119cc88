"""Tables. The schema is created only by Alembic migrations (``monitor db upgrade``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from monitor.db.base import Base, BigIntPK, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Chain(Base):
    __tablename__ = "chains"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    block_time_s: Mapped[float] = mapped_column(Float)
    confirmations: Mapped[int] = mapped_column(Integer)
    sla_availability: Mapped[float] = mapped_column(Float)
    sla_latency_p95_ms: Mapped[float] = mapped_column(Float)
    sla_max_lag_blocks: Mapped[int] = mapped_column(Integer)
    # JSON: the chain's whole SLA section (monitor.registry.schema.SlaTargets), for SLA reports
    sla: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    quorum: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    checks: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON
    scoring: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Operator(Base):
    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # JSON: chain id -> the SLA targets this operator is held to there instead of the chain's
    sla: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Endpoint(Base):
    """One operator's URL for one chain. The URL may carry an API key: never shown publicly."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("operator_id", "chain_id", "url"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    chain_id: Mapped[int] = mapped_column(ForeignKey("chains.chain_id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    archive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Probe(Base):
    __tablename__ = "probes"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    address: Mapped[str] = mapped_column(String(42), unique=True)  # EIP-55 checksummed
    name: Mapped[str] = mapped_column(String(100))
    region: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Batch(Base):
    """A signed batch exactly as received (``body``), kept for audit and re-verification."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("probe_id", "batch_id"),
        Index("ix_batches_received_at", "received_at"),
        Index("ix_batches_rolled_up", "rolled_up", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id"))
    batch_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    results_hash: Mapped[str] = mapped_column(String(66))
    signature: Mapped[str] = mapped_column(String(132))
    result_count: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    # keccak256 of the body's UTF-8 bytes: how attestations and GET /v1/batches/{hash} name it
    body_hash: Mapped[str] = mapped_column(String(66), unique=True)
    # Folded into the SLA rollups yet (monitor.sla.rollup)?
    rolled_up: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Result(Base):
    """One check of one endpoint by one probe in one round."""

    __tablename__ = "results"
    __table_args__ = (
        Index("ix_results_endpoint_observed", "endpoint_id", "observed_at"),
        Index("ix_results_chain_observed", "chain_id", "observed_at"),
        Index("ix_results_probe_observed", "probe_id", "observed_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id"))
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"))
    chain_id: Mapped[int] = mapped_column(ForeignKey("chains.chain_id"))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    head: Mapped[int | None] = mapped_column(BigInteger)
    reference_head: Mapped[int | None] = mapped_column(BigInteger)
    lag_blocks: Mapped[int | None] = mapped_column(BigInteger)
    lag_seconds: Mapped[float | None] = mapped_column(Float)
    check_height: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    correct: Mapped[bool | None] = mapped_column(Boolean)


class ScoringRun(Base):
    """One evaluation of one chain over one window; its scores are what the API serves."""

    __tablename__ = "scoring_runs"
    __table_args__ = (Index("ix_scoring_runs_chain_window_id", "chain_id", "window_s", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chain_id: Mapped[int] = mapped_column(ForeignKey("chains.chain_id"))
    window_s: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    # The newest batch (batches.id, storage order) stored when the run was made: a batch stored
    # later that observed this run's window is late data, and the scheduled job replays the run
    # with it (monitor.scoring.job.buckets_due). None: a run made outside the scheduled job.
    batches_through: Mapped[int | None] = mapped_column(BigInteger)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (Index("ix_scores_endpoint_run", "endpoint_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("scoring_runs.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id"))
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"))
    chain_id: Mapped[int] = mapped_column(ForeignKey("chains.chain_id"))
    availability: Mapped[float | None] = mapped_column(Float)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)
    lag_blocks: Mapped[float | None] = mapped_column(Float)
    lag_seconds: Mapped[float | None] = mapped_column(Float)
    correctness: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    probes: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    weight: Mapped[float] = mapped_column(Float)
    weight_bps: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # ok | recovering | excluded
    status_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # hysteresis and ramp
    reasons: Mapped[str] = mapped_column(Text)  # JSON array of reason codes
    errors: Mapped[str] = mapped_column(Text)  # JSON object: error kind -> count
    # JSON object: factor -> {value, sub_score, weight, share} (monitor.scoring.policy.explain)
    factors: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


class ProbeScore(Base):
    """How much one probe disagreed with the other probes in one run (outlier score)."""

    __tablename__ = "probe_scores"
    __table_args__ = (Index("ix_probe_scores_probe_run", "probe_id", "run_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("scoring_runs.id", ondelete="CASCADE"), index=True
    )
    probe_id: Mapped[int] = mapped_column(ForeignKey("probes.id"))
    endpoints: Mapped[int] = mapped_column(Integer)  # endpoints it measured with >= 3 probes
    disagreements: Mapped[int] = mapped_column(Integer)  # of those, where it differed
    kinds: Mapped[str] = mapped_column(Text)  # JSON object: quantity -> endpoints
    outlier_score: Mapped[float | None] = mapped_column(Float)  # disagreements / endpoints


# The other domains' tables, registered on the same metadata (Alembic reads it from here).
from monitor.attestations import models as _attestations  # noqa: E402, F401
from monitor.ingest import models as _ingest  # noqa: E402, F401
from monitor.sla import models as _sla  # noqa: E402, F401
