"""The collector's Prometheus metrics, served by ``GET /metrics`` (docs/metrics.md lists them).

Everything lives in one ``CollectorRegistry`` per app (``app.state.metrics``), never in
prometheus-client's global default registry, so several apps in one process do not collide.
Two kinds:

* read from the database at scrape time (:class:`ScoresCollector`): per endpoint, the newest
  scoring run of the default window per active chain; per probe, its outlier score and the age
  of its newest batch. A scrape costs a few indexed reads and no raw results;
* instruments updated as things happen (:class:`CollectorMetrics`, ``app.state.instruments``):
  ingest counters and histograms, job durations, webhook deliveries. They are passed explicitly
  to the ingest view and to the jobs.

Label values are bounded by the registry (chains, operators, endpoints, probes) or by the fixed
code lists below, never by traffic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from monitor import __version__
from monitor.db.models import Batch, Chain, Probe
from monitor.db.session import session_scope
from monitor.scoring.policy import EXCLUSION_REASONS
from monitor.scoring.service import latest_run, run_probe_scores, run_scores

if TYPE_CHECKING:
    from monitor.ingest.service import Ingested

log = logging.getLogger("monitor.metrics")

router = APIRouter(tags=["metrics"])

ENDPOINT_LABELS = ["chain_id", "operator", "endpoint_id"]

# RPC latencies: a healthy node answers in milliseconds, a timeout is 5 s by default.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# The error codes POST /v1/batches refuses with (monitor.exceptions and the codes the ingest path
# raises them with), plus the 503 of an unavailable database and the 500 of a bug. Any other code
# is counted as "other", so the label stays bounded whatever a future error is called.
INGEST_REJECTION_CODES = (
    "malformed_batch",
    "result_count_mismatch",
    "results_hash_mismatch",
    "bad_signature",
    "unknown_probe",
    "batch_from_future",
    "batch_conflict",
    "unknown_endpoint",
    "endpoint_mismatch",
    "observed_at_inconsistent",
    "payload_too_large",
    "database_unavailable",
    "internal_error",
)
OTHER_CODE = "other"
BATCH_OUTCOMES = ("accepted", "duplicate")
# Why a batch pulled from a peer was not stored: the ingest refusals (a database outage or a bug
# stops the sync instead), and a body that does not hash to what the peer said.
PEER_REFUSAL_CODES = (
    *(c for c in INGEST_REJECTION_CODES if c not in ("database_unavailable", "internal_error")),
    "hash_mismatch",
)
# Why a peer could not be read in a tick (monitor.exceptions.PeerError), or the database failed.
PEER_FAILURES = (
    "peer_unreachable",
    "peer_http_status",
    "peer_too_large",
    "peer_malformed",
    "database_unavailable",
    "internal_error",
)
WEBHOOK_OUTCOMES = ("delivered", "failed")

# The newest batch of a probe is looked for among the last hour's first (an index range); a probe
# silent for longer is looked up on its own.
RECENT_BATCHES = timedelta(hours=1)


# --- instruments --------------------------------------------------------------------------------


class IngestMetrics:
    """POST /v1/batches: what was accepted, what was refused and why, how long it took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter(
            "monitor_ingest_batches",
            "Batches acknowledged, by outcome: accepted (stored) or duplicate (an exact resend)",
            ["outcome"],
            registry=registry,
        )
        self.results = Counter(
            "monitor_ingest_results",
            "Results stored (of accepted, non-duplicate batches)",
            registry=registry,
        )
        self.rejected = Counter(
            "monitor_ingest_rejected",
            "Batches refused, by error code",
            ["code"],
            registry=registry,
        )
        self.duration = Histogram(
            "monitor_ingest_duration_seconds",
            "Time to handle one POST /v1/batches, body read included, whatever the outcome",
            buckets=INGEST_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "monitor_endpoint_latency_seconds",
            "Latency of each stored result that has one (available endpoints), as measured by "
            "the probes",
            ["chain_id", "operator"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for outcome in BATCH_OUTCOMES:  # present at 0 from the start: rate() needs a first value
            self.batches.labels(outcome)
        for code in (*INGEST_REJECTION_CODES, OTHER_CODE):
            self.rejected.labels(code)

    def stored(self, ingested: Ingested) -> None:
        """A batch acknowledged (call once its transaction has committed)."""
        if ingested.ack.duplicate:
            self.batches.labels("duplicate").inc()
            return
        self.batches.labels("accepted").inc()
        self.results.inc(len(ingested.results))
        for r in ingested.results:
            if r.latency_us is not None:
                self.latency.labels(str(r.chain_id), r.operator_id).observe(r.latency_us / 1e6)

    def refused(self, code: str) -> None:
        self.rejected.labels(code if code in INGEST_REJECTION_CODES else OTHER_CODE).inc()


class JobMetrics:
    """The scheduled jobs: scoring, SLA rollups, webhook deliveries, the peer sync."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scoring_duration = Histogram(
            "monitor_scoring_duration_seconds",
            "Duration of one scoring run (every active chain and window), commit included",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.rollup_duration = Histogram(
            "monitor_rollup_duration_seconds",
            "Duration of one SLA rollup run (rollups, then breach events)",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.rollup_batches = Counter(
            "monitor_rollup_batches",
            "Batches folded into the SLA rollups",
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "monitor_webhook_deliveries",
            "Breach webhook delivery attempts, by outcome: delivered (2xx) or failed (retried)",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self.peers = PeerMetrics(registry)


class PeerMetrics:
    """The peer sync (monitor.ingest.sync), per configured peer (its base URL: a bounded,
    configured set; the series are created for the peers of the settings)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pulled = Counter(
            "monitor_peer_batches_pulled",
            "Batches received from a peer's GET /v1/batches, whatever became of them",
            ["peer"],
            registry=registry,
        )
        self.stored = Counter(
            "monitor_peer_batches_stored",
            "Batches from a peer verified and acknowledged, by outcome: accepted (stored) or "
            "duplicate (already held)",
            ["peer", "outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "monitor_peer_batches_refused",
            "Batches from a peer refused and skipped, by error code",
            ["peer", "code"],
            registry=registry,
        )
        self.failures = Counter(
            "monitor_peer_sync_failures",
            "Syncs with a peer that stopped early (retried next tick), by reason",
            ["peer", "reason"],
            registry=registry,
        )
        self.last_success = Gauge(
            "monitor_peer_last_success_timestamp_seconds",
            "When a sync with the peer last read everything it had ready (Unix time; 0: never "
            "since start)",
            ["peer"],
            registry=registry,
        )

    def track(self, peers: list[str]) -> None:
        """Every series of ``peers`` present at 0, so rate() and alerts work from the start."""
        for peer in peers:
            self.pulled.labels(peer)
            self.last_success.labels(peer)
            for outcome in BATCH_OUTCOMES:
                self.stored.labels(peer, outcome)
            for code in (*PEER_REFUSAL_CODES, OTHER_CODE):
                self.refused.labels(peer, code)
            for reason in PEER_FAILURES:
                self.failures.labels(peer, reason)

    def refusal(self, peer: str, code: str) -> None:
        self.refused.labels(peer, code if code in PEER_REFUSAL_CODES else OTHER_CODE).inc()


@dataclass(frozen=True)
class CollectorMetrics:
    registry: CollectorRegistry
    ingest: IngestMetrics
    jobs: JobMetrics


def collector_metrics(engine: Engine, window_s: int) -> CollectorMetrics:
    """A fresh registry with the scrape-time collector and every instrument."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoresCollector(engine, window_s))
    Gauge(
        "monitor_build_info",
        "The running monitor's version (always 1)",
        ["version"],
        registry=registry,
    ).labels(__version__).set(1)
    return CollectorMetrics(registry, IngestMetrics(registry), JobMetrics(registry))


# --- read at scrape time ------------------------------------------------------------------------


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


class ScoresCollector(Collector):
    """Gauges from the newest scoring run of ``window_s`` per active chain, and per active probe
    the age of its newest batch. With the database down, only ``monitor_database_up 0``."""

    def __init__(self, engine: Engine, window_s: int) -> None:
        self.engine = engine
        self.window_s = window_s

    def collect(self) -> Iterator[Metric]:
        up = _gauge("monitor_database_up", "1 when the scrape could read the database, else 0", [])
        try:
            with session_scope(self.engine) as session:
                families = self._read(session, now=datetime.now(UTC))
        except (OperationalError, InterfaceError) as exc:
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, session: Session, *, now: datetime) -> list[Metric]:
        score = _gauge(
            "monitor_endpoint_score", "Score in [0, 1] (absent: insufficient data)", ENDPOINT_LABELS
        )
        weight = _gauge(
            "monitor_endpoint_weight",
            "Routing weight in [0, 1]; sums to 1 per chain",
            ENDPOINT_LABELS,
        )
        availability = _gauge(
            "monitor_endpoint_availability",
            "Share of checks the endpoint answered, median over probes, in [0, 1]",
            ENDPOINT_LABELS,
        )
        correctness = _gauge(
            "monitor_endpoint_correctness",
            "Share of judged checks the endpoint answered correctly, in [0, 1]",
            ENDPOINT_LABELS,
        )
        lag_blocks = _gauge(
            "monitor_endpoint_lag_blocks", "Blocks behind the reference head", ENDPOINT_LABELS
        )
        lag_seconds = _gauge(
            "monitor_endpoint_lag_seconds",
            "Lag behind the reference head in seconds (blocks x block time)",
            ENDPOINT_LABELS,
        )
        p50 = _gauge(
            "monitor_endpoint_latency_p50_seconds",
            "Median latency over the scoring window",
            ENDPOINT_LABELS,
        )
        p95 = _gauge(
            "monitor_endpoint_latency_p95_seconds",
            "95th percentile latency over the scoring window",
            ENDPOINT_LABELS,
        )
        excluded = _gauge(
            "monitor_endpoint_excluded",
            "1 when the endpoint is excluded (weight 0), else 0",
            ENDPOINT_LABELS,
        )
        reason = _gauge(
            "monitor_endpoint_exclusion_reason",
            "1 for each reason an excluded endpoint is excluded for (absent when not excluded)",
            [*ENDPOINT_LABELS, "reason"],
        )
        run_time = _gauge(
            "monitor_scoring_run_timestamp_seconds",
            "as_of of the scoring run the endpoint gauges come from (Unix time)",
            ["chain_id"],
        )
        outlier = _gauge(
            "monitor_probe_outlier_score",
            "Share of endpoints on which the probe disagreed with the other probes",
            ["chain_id", "probe"],
        )
        batch_age = _gauge(
            "monitor_probe_last_batch_age_seconds",
            "Seconds since the collector received the probe's newest batch (absent: none yet)",
            ["probe"],
        )
        optional = (
            (availability, "availability", 1.0),
            (correctness, "correctness", 1.0),
            (lag_blocks, "lag_blocks", 1.0),
            (lag_seconds, "lag_seconds", 1.0),
            (p50, "latency_p50_ms", 1e-3),
            (p95, "latency_p95_ms", 1e-3),
        )
        for chain_id in session.scalars(select(Chain.chain_id).where(Chain.active.is_(True))):
            run = latest_run(session, chain_id=chain_id, window_s=self.window_s)
            if run is None:
                continue
            run_time.add_metric([str(chain_id)], run.as_of.timestamp())
            for s in run_scores(session, run_id=run.id):
                labels = [str(chain_id), s.operator_id, str(s.endpoint_id)]
                if s.score is not None:
                    score.add_metric(labels, s.score)
                weight.add_metric(labels, s.weight)
                for family, attribute, scale in optional:
                    value = getattr(s, attribute)
                    if value is not None:
                        family.add_metric(labels, value * scale)
                is_excluded = s.status == "excluded"
                excluded.add_metric(labels, 1.0 if is_excluded else 0.0)
                if is_excluded:
                    for code in json.loads(s.reasons):
                        if code in EXCLUSION_REASONS:
                            reason.add_metric([*labels, code], 1.0)
            for p, probe in run_probe_scores(session, run_id=run.id):
                if p.outlier_score is not None:
                    outlier.add_metric([str(chain_id), probe.address], p.outlier_score)
        for address, received_at in newest_batches(session, now=now).items():
            batch_age.add_metric([address], max(0.0, (now - received_at).total_seconds()))
        return [
            score,
            weight,
            availability,
            correctness,
            lag_blocks,
            lag_seconds,
            p50,
            p95,
            excluded,
            reason,
            run_time,
            outlier,
            batch_age,
        ]


def newest_batches(session: Session, *, now: datetime) -> dict[str, datetime]:
    """Active probe address -> when its newest batch was received (probes with none: absent)."""
    probes = session.execute(select(Probe.id, Probe.address).where(Probe.active.is_(True))).all()
    recent: dict[int, datetime] = {
        probe_id: received_at
        for probe_id, received_at in session.execute(
            select(Batch.probe_id, func.max(Batch.received_at))
            .where(Batch.received_at >= now - RECENT_BATCHES)
            .group_by(Batch.probe_id)
        )
    }
    newest: dict[str, datetime] = {}
    for probe_id, address in probes:
        received_at = recent.get(probe_id)
        if received_at is None:  # silent for an hour or more: its own (indexed) lookup
            received_at = session.scalar(
                select(func.max(Batch.received_at)).where(Batch.probe_id == probe_id)
            )
        if received_at is not None:
            newest[address] = received_at
    return newest


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
