"""A small fleet for the SLA tests: one chain, two operators, three probes, batches ingested
through the real ingest service (signed, verified, stored) at chosen times."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.db.models import Chain, Endpoint, Operator, Probe, Result
from monitor.db.session import session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.ingest.service import ingest_batch
from monitor.registry.apply import apply_registry
from monitor.registry.schema import parse_registry
from monitor.signing.eip712 import sign_batch
from monitor.sla.judge import ProbeMinute, SlaFigures, evaluate
from monitor.sla.targets import subject_targets

CHAIN = 1
T0 = datetime(2026, 11, 2, 10, 37, tzinfo=UTC)  # not on an hour: periods have edges


@dataclass
class Fleet:
    probes: list[LocalAccount]
    endpoints: dict[str, int]


def registry_text(probes: list[LocalAccount], extra: str = "") -> str:
    probe_lines = "".join(
        f"  - {{address: '{a.address}', name: p{i}, region: r{i}}}\n" for i, a in enumerate(probes)
    )
    return (
        "chains:\n"
        "  - {chain_id: 1, name: mainnet, block_time_s: 12, confirmations: 3,\n"
        "     sla: {availability: 0.99, latency_p95_ms: 250, max_lag_blocks: 2}}\n"
        "operators:\n"
        "  - {id: alpha, name: Alpha, endpoints: [{chain_id: 1, url: 'http://alpha.test/'}]}\n"
        "  - {id: bravo, name: Bravo, endpoints: [{chain_id: 1, url: 'http://bravo.test/'}]}\n"
        f"probes:\n{probe_lines}{extra}"
    )


def make_fleet(engine: Engine, *, probes: int = 3, extra: str = "") -> Fleet:
    accounts = [Account.create() for _ in range(probes)]
    registry = parse_registry(registry_text(accounts, extra), source="test")
    with session_scope(engine) as session:
        apply_registry(session, registry=registry)
    with session_scope(engine) as session:
        endpoints = {o: e for o, e in session.execute(select(Endpoint.operator_id, Endpoint.id))}
    return Fleet(accounts, endpoints)


def result(
    fleet: Fleet,
    operator: str,
    at: datetime,
    *,
    ok: bool = True,
    lag: int = 0,
    ms: float = 50.0,
    correct: bool | None = True,
) -> ProbeResult:
    return ProbeResult(
        endpoint_id=fleet.endpoints[operator],
        operator_id=operator,
        chain_id=CHAIN,
        observed_at_ms=int(at.timestamp() * 1000),
        ok=ok,
        error=("wrong_hash" if correct is False else None) if ok else "timeout",
        latency_us=round(ms * 1000) if ok else None,
        head=1000 - lag if ok else None,
        reference_head=1000,
        lag_blocks=lag if ok else None,
        lag_ms=lag * 12_000 if ok else None,
        check_height=997,
        block_hash="0x" + "ab" * 32,
        correct=correct if ok else None,
    )


def post(
    engine: Engine, account: LocalAccount, results: list[ProbeResult], *, created: datetime
) -> str:
    """Sign and ingest one batch created at ``created``; returns the raw body."""
    body = sign_batch(
        account, results, created_at_ms=int(created.timestamp() * 1000)
    ).model_dump_json()
    with session_scope(engine) as session:
        ingest_batch(
            session,
            body=body.encode(),
            now=created + timedelta(seconds=1),
            clock_skew=timedelta(seconds=60),
            max_results=10_000,
        )
    return body


def raw_figures(
    engine: Engine, operator: str, start: datetime, end: datetime
) -> tuple[SlaFigures, dict[int, str]]:
    """The period straight from the raw results table (what rollups must equal)."""
    minutes: dict[int, dict[object, ProbeMinute]] = defaultdict(dict)
    with session_scope(engine) as session:
        targets = subject_targets(session.get(Chain, CHAIN), session.get(Operator, operator))  # type: ignore[arg-type]
        for r in session.scalars(
            select(Result).where(
                Result.operator_id == operator,
                Result.chain_id == CHAIN,
                Result.observed_at >= start,
                Result.observed_at < end,
            )
        ):
            m = int((r.observed_at - start).total_seconds()) // 60
            pm = minutes[m].setdefault(r.probe_id, ProbeMinute())
            pm.add(
                ok=r.ok,
                correct=r.correct,
                lag_blocks=r.lag_blocks,
                latency_us=None if r.latency_ms is None else round(r.latency_ms * 1000),
            )
    figures, verdicts = evaluate(
        minutes, minutes=int((end - start).total_seconds()) // 60, targets=targets
    )
    return figures, {m: v.state for m, v in verdicts.items()}


def probe_ids(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {a: i for a, i in session.execute(select(Probe.address, Probe.id))}
