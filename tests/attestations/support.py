"""A hand-computed SLA fixture for the attestation tests: one chain, two operators, three probes,
six minutes judged by hand (docs/sla.md rules), and a late batch that changes one of them.

Targets: availability 0.99, latency p95 500 ms, max lag 3 blocks, correctness 0.99, at least 2
probes per minute, coverage 0.5. ``alpha``'s minutes m0..m5 of the period, per probe (``-``: no
check; ``unav``: timeout; ``lagN``: N blocks behind; latencies in ms):

======  ==========  ==========  ==========  =================================================
minute  P0          P1          P2          verdict
======  ==========  ==========  ==========  =================================================
m0      ok 20       ok 20       ok 20       up
m1      unav        unav        ok 600      down: unavailable (2 of 3 probes)
m2      unav        (late) unav -           insufficient (1 probe); down: unavailable once the
                                            late batch of P1 arrives
m3      ok 20       -           -           insufficient: one probe, no quorum
m4      ok 20 lag5  ok 20 lag5  ok 20 lag0  down: lagging (2 of 3)
m5      ok 20       ok 450      ok 20       up (P1's wrong hash is one probe of 3)
                    wrong_hash
======  ==========  ==========  ==========  =================================================

Beyond the period: P0 checked alpha 1 ms before it (not counted) and at its end (unavailable),
P1's late batch also has the minute after the period (unavailable): that minute is the second
period's evidence. Every batch also carries ``bravo``'s results, which must not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.db.models import Endpoint
from monitor.db.session import session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.registry.apply import apply_registry
from monitor.registry.schema import parse_registry
from monitor.signing.eip712 import sign_batch
from monitor.sla.judge import SlaTargets

CHAIN = 1
TARGETS = SlaTargets(
    availability_ppm=990_000,
    latency_p95_ms=500,
    max_lag_blocks=3,
    correctness_ppm=990_000,
    min_probes=2,
    min_coverage_ppm=500_000,
)
TOKEN = "s3cret-admin-token"

# Figures after the late batch (the message's Figures struct), and before it.
FINAL = {
    "totalMinutes": 6,
    "up": 2,
    "down": 3,
    "insufficient": 1,
    "downUnavailable": 2,
    "downLagging": 1,
    "downIncorrect": 0,
    "longestOutageMinutes": 2,
    "availabilityPpm": 400_000,  # 2 up of 5 judged
    "lagCompliancePpm": 800_000,  # 1 lagging of 5
    "correctnessPpm": 1_000_000,  # lower median of P0 1, P1 2/3, P2 1
    "latencyP50Ms": 20,
    "latencyP95Ms": 500,  # lower median of P0 20, P1 500 (450 ms), P2 600
    "latencyP99Ms": 500,
    "probeCount": 3,
    "samples": 15,  # P0 6, P1 5, P2 4
}
BEFORE_LATE = {
    **FINAL,
    "down": 2,
    "insufficient": 2,
    "downUnavailable": 1,
    "longestOutageMinutes": 1,
    "availabilityPpm": 500_000,  # 2 of 4
    "lagCompliancePpm": 750_000,  # 1 lagging of 4
    "samples": 14,
}
VERDICTS = {
    "availability": "breached",
    "latencyP95": "met",
    "lag": "breached",
    "correctness": "met",
}


@dataclass
class Fleet:
    probes: list[LocalAccount]
    endpoints: dict[str, int]  # operator id -> its endpoint on CHAIN


def registry(probes: list[LocalAccount]) -> dict[str, Any]:
    return {
        "chains": [
            {
                "chain_id": CHAIN,
                "name": "mainnet",
                "block_time_s": 12,
                "confirmations": 3,
                "sla": {
                    "availability": 0.99,
                    "latency_p95_ms": 500,
                    "max_lag_blocks": 3,
                    "correctness": 0.99,
                    "min_probes": 2,
                    "min_coverage": 0.5,
                },
            }
        ],
        "operators": [
            {
                "id": "alpha",
                "name": "Alpha",
                "endpoints": [{"chain_id": CHAIN, "url": "http://a/"}],
            },
            {
                "id": "bravo",
                "name": "Bravo",
                "endpoints": [{"chain_id": CHAIN, "url": "http://b/"}],
            },
        ],
        "probes": [
            {"address": a.address, "name": f"p{i}", "region": f"r{i}"} for i, a in enumerate(probes)
        ],
    }


def make_fleet(engine: Engine) -> Fleet:
    accounts = [Account.create() for _ in range(3)]
    with session_scope(engine) as session:
        apply_registry(
            session, registry=parse_registry(yaml.safe_dump(registry(accounts)), source="test")
        )
    with session_scope(engine) as session:
        endpoints = {o: e for o, e in session.execute(select(Endpoint.operator_id, Endpoint.id))}
    return Fleet(accounts, endpoints)


def fake_fleet() -> Fleet:
    """Keys and endpoint ids for the pure tests (no database)."""
    return Fleet([Account.create() for _ in range(3)], {"alpha": 1, "bravo": 2})


def ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def check(
    fleet: Fleet,
    operator: str,
    at_ms: int,
    *,
    ok: bool = True,
    lag: int = 0,
    latency_ms: int = 20,
    correct: bool = True,
) -> ProbeResult:
    return ProbeResult(
        endpoint_id=fleet.endpoints[operator],
        operator_id=operator,
        chain_id=CHAIN,
        observed_at_ms=at_ms,
        ok=ok,
        error=("wrong_hash" if not correct else None) if ok else "timeout",
        latency_us=latency_ms * 1000 if ok else None,
        head=1000 - lag if ok else None,
        reference_head=1000,
        lag_blocks=lag if ok else None,
        lag_ms=lag * 12_000 if ok else None,
        check_height=997,
        block_hash=("0x" + ("cd" if not correct else "ab") * 32) if ok else None,
        correct=correct if ok else None,
    )


# minute -> per probe: None (no check) or the keyword arguments of ``check``
ALPHA: dict[int, list[dict[str, Any] | None]] = {
    0: [{}, {}, {}],
    1: [{"ok": False}, {"ok": False}, {"latency_ms": 600}],
    2: [{"ok": False}, None, None],  # P1's check of m2 arrives late
    3: [{}, None, None],
    4: [{"lag": 5}, {"lag": 5}, {}],
    5: [{}, {"latency_ms": 450, "correct": False}, {}],
}


def scenario(fleet: Fleet, start: datetime, *, created: datetime) -> tuple[list[str], str]:
    """The three probes' batches (one each) and P1's late batch, as raw bodies."""
    t0 = ms(start)
    bodies = []
    for i, account in enumerate(fleet.probes):
        results = []
        for minute, per_probe in ALPHA.items():
            kwargs = per_probe[i]
            at = t0 + minute * 60_000 + 10_000 + i * 1_000
            if kwargs is not None:
                results.append(check(fleet, "alpha", at, **kwargs))
            results.append(check(fleet, "bravo", at, ok=(minute % 2 == 0)))
        if i == 0:
            results.append(check(fleet, "alpha", t0 - 1, ok=True))  # just before the period
            results.append(check(fleet, "alpha", t0 + 6 * 60_000, ok=False))  # its end: m6
        bodies.append(sign(account, results, created=created))
    late = sign(
        fleet.probes[1],
        [
            check(fleet, "alpha", t0 + 2 * 60_000 + 30_000, ok=False),
            check(fleet, "alpha", t0 + 6 * 60_000 + 30_000, ok=False),
        ],
        created=created + timedelta(seconds=1),
    )
    return bodies, late


def sign(account: LocalAccount, results: list[ProbeResult], *, created: datetime) -> str:
    return sign_batch(account, results, created_at_ms=ms(created)).model_dump_json()
