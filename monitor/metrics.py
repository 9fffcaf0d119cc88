"""GET /metrics: Prometheus text format, read from the newest scoring runs at scrape time.

Labels are bounded by the registry (chains x endpoints, chains x probes), never by traffic:
``chain_id``, ``operator``, ``endpoint_id`` and ``probe`` (an address). Values come from the
default window's newest run, so a scrape costs a few indexed reads and no raw results.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool

from monitor.db.models import Chain
from monitor.db.session import session_scope
from monitor.scoring.service import latest_run, run_probe_scores, run_scores

router = APIRouter(tags=["metrics"])

ENDPOINT_LABELS = ["chain_id", "operator", "endpoint_id"]


class ScoresCollector(Collector):
    def __init__(self, engine: Engine, window_s: int) -> None:
        self.engine = engine
        self.window_s = window_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        score = GaugeMetricFamily(
            "monitor_endpoint_score",
            "Score in [0, 1] (absent: insufficient data)",
            labels=ENDPOINT_LABELS,
        )
        weight = GaugeMetricFamily(
            "monitor_endpoint_weight",
            "Routing weight in [0, 1]; sums to 1 per chain",
            labels=ENDPOINT_LABELS,
        )
        outlier = GaugeMetricFamily(
            "monitor_probe_outlier_score",
            "Share of endpoints on which the probe disagreed with the other probes",
            labels=["chain_id", "probe"],
        )
        with session_scope(self.engine) as session:
            for chain_id in session.scalars(select(Chain.chain_id).where(Chain.active.is_(True))):
                run = latest_run(session, chain_id=chain_id, window_s=self.window_s)
                if run is None:
                    continue
                for s in run_scores(session, run_id=run.id):
                    labels = [str(chain_id), s.operator_id, str(s.endpoint_id)]
                    if s.score is not None:
                        score.add_metric(labels, s.score)
                    weight.add_metric(labels, s.weight)
                for p, probe in run_probe_scores(session, run_id=run.id):
                    if p.outlier_score is not None:
                        outlier.add_metric([str(chain_id), probe.address], p.outlier_score)
        yield from (score, weight, outlier)


def metrics_registry(engine: Engine, window_s: int) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoresCollector(engine, window_s))
    return registry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
