"""Databases for the dashboard's SQL tests.

``seed_pipeline``: a real pipeline run. The demo's five simulated operators and three probes
from the registry; two hours of history signed by the probes' keys and stored by the real ingest
service (``ingest_batch``) at their observation times, scored by the real scoring job at many
``as_of`` and rolled up by the real SLA job (breach events open and close); then real probe
rounds against the simnet, delivered over loopback HTTP to the in-process collector, scored and
rolled up at the present. Every table the dashboard reads has rows, and every kind of row.

``seed_volume``: a realistic size for timing, generated inside PostgreSQL (``generate_series``):
30 endpoints, 3 probes, 24 h of 10 s rounds (777,600 results, 25,920 batches), a scoring run
every 15 s for both windows (345,600 scores), minute and hour rollups, breach events.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor import simnet
from monitor.app import create_app
from monitor.db.models import Endpoint
from monitor.db.session import session_scope
from monitor.ingest.schemas import ErrorKind, ProbeResult
from monitor.ingest.service import ingest_batch
from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from monitor.sla.job import run_rollups
from tests.conftest import make_settings, start_network

HISTORY_MINUTES = 115  # ends a few minutes before the present, where the real rounds land
STEP_MINUTES = 5  # scoring and breach evaluation every 5 simulated minutes
BRAVO_LAGGING_UNTIL = 30  # bravo 4 blocks behind, then 1
BRAVO_OUTAGE = range(40, 60)  # bravo times out for 20 minutes
DELTA_SLOW_UNTIL = 80  # delta above the 250 ms p95 target, then fast
LIAR = 2  # this probe reports alpha 5 blocks behind: its outlier score rises
REAL_ROUNDS = 2


@dataclass(frozen=True)
class Seeded:
    url: str
    start: datetime  # the first simulated minute
    now: datetime  # after the real rounds


def _ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _check(
    endpoint_id: int,
    operator: str,
    at: datetime,
    reference: int,
    *,
    ok: bool = True,
    error: ErrorKind | None = None,
    latency_ms: float = 40.0,
    lag: int = 0,
) -> ProbeResult:
    correct = error is None if ok else None
    return ProbeResult(
        endpoint_id=endpoint_id,
        operator_id=operator,
        chain_id=simnet.DEMO_CHAIN_ID,
        observed_at_ms=_ms(at),
        ok=ok,
        error=error if ok else "timeout",
        latency_us=round(latency_ms * 1000) if ok else None,
        head=reference - lag if ok else None,
        reference_head=reference,
        lag_blocks=lag if ok else None,
        lag_ms=lag * 1000 if ok else None,
        check_height=reference - 3,
        block_hash=("0x" + ("ab" if correct else "cd") * 32) if ok else None,
        correct=correct,
    )


def _round(endpoints: dict[str, int], probe: int, minute: int, at: datetime) -> list[ProbeResult]:
    """One probe's checks of the five operators in one simulated minute."""
    reference = 100_000 + minute * 60
    e = endpoints
    return [
        _check(e["alpha"], "alpha", at, reference, latency_ms=30 + 5 * probe,
               lag=5 if probe == LIAR else 0),
        _check(e["bravo"], "bravo", at, reference, ok=minute not in BRAVO_OUTAGE,
               latency_ms=60, lag=4 if minute < BRAVO_LAGGING_UNTIL else 1),
        _check(e["charlie"], "charlie", at, reference, error="wrong_hash", latency_ms=50),
        _check(e["delta"], "delta", at, reference,
               latency_ms=300 + 10 * probe if minute < DELTA_SLOW_UNTIL else 120),
        _check(e["echo"], "echo", at, reference, error="head_missing", latency_ms=45),
    ]  # fmt: skip


def _history(
    engine: Engine, settings: Settings, probes: list[LocalAccount], start: datetime
) -> None:
    with session_scope(engine) as session:
        rows = session.execute(select(Endpoint.operator_id, Endpoint.id))
        endpoints = {operator: endpoint for operator, endpoint in rows}
    for minute in range(HISTORY_MINUTES):
        for i, account in enumerate(probes):
            at = start + timedelta(minutes=minute, seconds=5 + i)
            created = at + timedelta(seconds=10)
            body = sign_batch(
                account, _round(endpoints, i, minute, at), created_at_ms=_ms(created)
            ).model_dump_json()
            with session_scope(engine) as session:
                ingest_batch(
                    session,
                    body=body.encode(),
                    now=created + timedelta(seconds=1),
                    clock_skew=timedelta(seconds=60),
                    max_results=1000,
                )
    for step in range(STEP_MINUTES, HISTORY_MINUTES + 1, STEP_MINUTES):
        at = start + timedelta(minutes=step)
        run_scoring(engine, settings, as_of=at)
        run_rollups(engine, settings, now=at)


async def _real_rounds(settings: Settings, probes: list[LocalAccount], tmp: Path) -> None:
    agents = [
        ProbeAgent(settings=settings, account=a, outbox=Outbox(tmp / f"probe-{i}.sqlite"))
        for i, a in enumerate(probes)
    ]
    try:
        for _ in range(REAL_ROUNDS):
            await asyncio.gather(*(agent.round() for agent in agents))
            await asyncio.sleep(0.3)
        assert all([await agent.deliver_pending() for agent in agents])
    finally:
        for agent in agents:
            await agent.aclose()
            agent.outbox.close()


def seed_pipeline(engine: Engine, url: str, tmp: Path) -> Seeded:
    settings = make_settings(url, interval_s=1.0, rpc_timeout_s=2.0, breach_window_s=600)
    sim, probes, _ = start_network(engine, tmp, simnet.DEMO_OPERATORS)
    try:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        start = minute - timedelta(minutes=HISTORY_MINUTES + 5)
        _history(engine, settings, probes, start)
        collector = ServerThread(
            create_app(settings, engine=engine, scoring=False), name="collector", lifespan="on"
        )
        collector.start()
        try:
            settings = settings.model_copy(update={"collector_urls": [collector.url]})
            asyncio.run(_real_rounds(settings, probes, tmp))
        finally:
            collector.stop()
    finally:
        sim.stop()
    now = datetime.now(UTC)
    run_scoring(engine, settings, as_of=now)
    run_rollups(engine, settings, now=now)
    return Seeded(url, start, now)


# -- volume -----------------------------------------------------------------------------------

VOLUME_ENDPOINTS = 30
VOLUME_PROBES = 3
VOLUME_ROUNDS = 8640  # 24 h of 10 s rounds
VOLUME_RUNS = 5760  # 24 h of 15 s scoring runs, per window

# One transaction: now() is the same instant in every statement. The rows are consistent by
# construction, so foreign keys are not checked row by row (as pg_restore does it): that is 4.5
# million lookups, most of the time it would take.
VOLUME_SQL = f"""
SET LOCAL session_replication_role = replica;

CREATE TEMP TABLE span ON COMMIT DROP AS
  SELECT date_trunc('minute', now()) - interval '24 hours' AS t0;

INSERT INTO chains (chain_id, name, block_time_s, confirmations, sla_availability,
                    sla_latency_p95_ms, sla_max_lag_blocks, sla, quorum, checks, scoring, active,
                    updated_at)
VALUES (1, 'mainnet', 12, 3, 0.999, 500, 3,
        '{{"availability": 0.999, "latency_p95_ms": 500.0, "max_lag_blocks": 3,
          "correctness": 0.999, "min_probes": 2, "min_coverage": 0.5}}',
        2, '{{}}', '{{}}', true, now());

INSERT INTO operators (id, name, sla, active, updated_at)
SELECT 'op-' || lpad(e::text, 2, '0'), 'Operator ' || e,
       CASE WHEN e = 0 THEN '{{"1": {{"availability": 0.9995}}}}' ELSE '{{}}' END, true, now()
FROM generate_series(0, {VOLUME_ENDPOINTS - 1}) AS e;

INSERT INTO endpoints (id, operator_id, chain_id, url, archive, active, updated_at)
SELECT e + 1, 'op-' || lpad(e::text, 2, '0'), 1,
       'https://op-' || e || '.example/rpc/' || md5(e::text), false, true, now()
FROM generate_series(0, {VOLUME_ENDPOINTS - 1}) AS e;

INSERT INTO probes (id, address, name, region, active, updated_at)
SELECT p + 1, '0x' || lpad(to_hex(p + 1), 40, '0'), 'probe-' || p,
       (ARRAY['eu-west', 'us-east', 'ap-south'])[p + 1], true, now()
FROM generate_series(0, {VOLUME_PROBES - 1}) AS p;

INSERT INTO batches (id, probe_id, batch_id, created_at, received_at, results_hash, signature,
                     result_count, body, body_hash, rolled_up)
SELECT k * {VOLUME_PROBES} + p + 1, p + 1, md5(k || ':' || p),
       span.t0 + k * interval '10 seconds' + interval '1 second',
       span.t0 + k * interval '10 seconds' + interval '1200 milliseconds',
       '0x' || md5(k || 'r' || p) || md5(p || 'r' || k), '0x' || repeat('ab', 65),
       {VOLUME_ENDPOINTS}, repeat('{{"endpoint_id": 1, "ok": true}},', 40),
       '0x' || md5(k || 'b' || p) || md5(p || 'b' || k), true
FROM span, generate_series(0, {VOLUME_ROUNDS - 1}) AS k,
     generate_series(0, {VOLUME_PROBES - 1}) AS p;

INSERT INTO results (batch_id, probe_id, endpoint_id, operator_id, chain_id, observed_at, ok,
                     error, latency_ms, head, reference_head, lag_blocks, lag_seconds,
                     check_height, block_hash, correct)
SELECT k * {VOLUME_PROBES} + p + 1, p + 1, e + 1, 'op-' || lpad(e::text, 2, '0'), 1,
       span.t0 + k * interval '10 seconds' + e * interval '10 milliseconds',
       v.ok, CASE WHEN NOT v.ok THEN 'timeout' END,
       CASE WHEN v.ok THEN 20 + e * 7 + p * 40 + (k * 13 + e) % 50 END,
       CASE WHEN v.ok THEN 20000000 + k - v.lag END, 20000000 + k,
       CASE WHEN v.ok THEN v.lag END, CASE WHEN v.ok THEN v.lag * 12.0 END,
       20000000 + k - 3,
       CASE WHEN v.ok THEN '0x' || md5(k::text) || md5(k::text) END,
       CASE WHEN v.ok THEN true END
FROM span, generate_series(0, {VOLUME_ROUNDS - 1}) AS k,
     generate_series(0, {VOLUME_PROBES - 1}) AS p,
     generate_series(0, {VOLUME_ENDPOINTS - 1}) AS e,
     LATERAL (SELECT (k * 7 + e * 3 + p) % 400 <> 0 AS ok, ((k + e) % 4 = 0)::int AS lag) AS v;

INSERT INTO scoring_runs (id, chain_id, window_s, as_of, duration_ms)
SELECT j * 2 + w + 1, 1, (ARRAY[300, 3600])[w + 1], span.t0 + j * interval '15 seconds',
       20 + j % 10
FROM span, generate_series(0, {VOLUME_RUNS - 1}) AS j, generate_series(0, 1) AS w;

INSERT INTO scores (run_id, endpoint_id, operator_id, chain_id, availability, latency_p50_ms,
                    latency_p95_ms, lag_blocks, lag_seconds, correctness, samples, probes, score,
                    weight, weight_bps, status, status_since, reasons, errors, factors)
SELECT r.id, e + 1, 'op-' || lpad(e::text, 2, '0'), 1,
       0.995 + (e % 5) * 0.001, 60 + e * 7, 110 + e * 7 + (r.id % 20), (e % 4) * 0.5,
       (e % 4) * 6.0, CASE WHEN e = 29 THEN 0.5 ELSE 1.0 END, 90, 3,
       CASE WHEN e = 29 THEN 0.0 ELSE 0.5 + e * 0.01 END,
       CASE WHEN e = 29 THEN 0.0 ELSE 1.0 / {VOLUME_ENDPOINTS - 1} END, 0,
       CASE WHEN e = 29 THEN 'excluded' ELSE 'ok' END, span.t0,
       CASE WHEN e = 29 THEN '["incorrect", "wrong_hash"]' ELSE '[]' END, '{{}}', '{{}}'
FROM span, scoring_runs AS r, generate_series(0, {VOLUME_ENDPOINTS - 1}) AS e;

INSERT INTO probe_scores (run_id, probe_id, endpoints, disagreements, kinds, outlier_score)
SELECT r.id, p + 1, {VOLUME_ENDPOINTS}, CASE WHEN p = 2 THEN 1 ELSE 0 END, '{{}}',
       CASE WHEN p = 2 THEN 1.0 / {VOLUME_ENDPOINTS} ELSE 0.0 END
FROM scoring_runs AS r, generate_series(0, {VOLUME_PROBES - 1}) AS p;

INSERT INTO subject_minutes (chain_id, operator_id, minute, state, reasons, probes, samples)
SELECT 1, 'op-' || lpad(e::text, 2, '0'), span.t0 + m * interval '1 minute',
       CASE WHEN (m + e) % 97 = 0 THEN 'down' WHEN (m + e) % 101 = 0 THEN 'insufficient'
            ELSE 'up' END,
       CASE WHEN (m + e) % 97 = 0 THEN 'unavailable' ELSE '' END, 3, 18
FROM span, generate_series(0, 1439) AS m, generate_series(0, {VOLUME_ENDPOINTS - 1}) AS e;

INSERT INTO subject_hours (chain_id, operator_id, hour, up, down, unavailable, lagging,
                           incorrect, samples)
SELECT chain_id, operator_id, date_trunc('hour', minute),
       count(*) FILTER (WHERE state = 'up'), count(*) FILTER (WHERE state = 'down'),
       count(*) FILTER (WHERE state = 'down'), 0, 0, sum(samples)
FROM subject_minutes
GROUP BY 1, 2, 3;

INSERT INTO breach_events (chain_id, operator_id, target, started_at, ended_at, reason, figure,
                           threshold)
SELECT 1, 'op-' || lpad(e::text, 2, '0'), 'availability',
       span.t0 + (e * 40) * interval '1 minute',
       CASE WHEN e < 5 THEN span.t0 + (e * 40 + 30) * interval '1 minute' END,
       'availability 98 % over the last 60 min, below the target 99.9 %', 980000, 999000
FROM span, generate_series(0, 9) AS e;
"""
