"""Ingest throughput against its own limit, side by side in one run.

    .venv/bin/python bench/ingest.py [--batches 200] [--results 50] [--database-url URL]

Prints: signature verifications per second (the CPU limit: one recovery per batch), batches and
results per second that the collector's service verifies *and* stores, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account import Account

from monitor.db.migrate import upgrade
from monitor.db.models import Chain, Endpoint, Operator, Probe
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.ingest.service import ingest_batch
from monitor.signing.eip712 import sign_batch, verify_batch


def make_batches(account, endpoint_ids: list[int], batches: int):  # type: ignore[no-untyped-def]
    now_ms = time.time_ns() // 1_000_000
    out = []
    for b in range(batches):
        results = [
            ProbeResult(
                endpoint_id=eid,
                operator_id="op",
                chain_id=1,
                observed_at_ms=now_ms - 1000 + b,
                ok=True,
                error=None,
                latency_us=1234 + i,
                head=1000 + b,
                reference_head=1000 + b,
                lag_blocks=0,
                lag_ms=0,
                check_height=994 + b,
                block_hash="0x" + "ab" * 32,
                correct=True,
            )
            for i, eid in enumerate(endpoint_ids)
        ]
        out.append(sign_batch(account, results, created_at_ms=now_ms))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--results", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    account = Account.create()
    with session_scope(engine) as session:
        session.add(
            Chain(
                chain_id=1,
                name="bench",
                block_time_s=12,
                confirmations=6,
                sla_availability=0.999,
                sla_latency_p95_ms=500,
                sla_max_lag_blocks=3,
            )
        )
        session.add(Operator(id="op", name="Op"))
        session.add(Probe(address=account.address, name="bench", region="here"))
        session.flush()
        endpoints = [
            Endpoint(operator_id="op", chain_id=1, url=f"http://127.0.0.1/{i}")
            for i in range(args.results)
        ]
        session.add_all(endpoints)
        session.flush()
        endpoint_ids = [e.id for e in endpoints]
    batches = make_batches(account, endpoint_ids, args.batches)
    bodies = [b.model_dump_json().encode() for b in batches]

    started = time.perf_counter()
    for b in batches:
        verify_batch(b)
    verify_s = time.perf_counter() - started

    started = time.perf_counter()
    for body in bodies:
        with session_scope(engine) as session:
            ingest_batch(
                session,
                body=body,
                now=datetime.now(UTC),
                clock_skew=timedelta(seconds=60),
                max_results=100_000,
            )
    ingest_s = time.perf_counter() - started
    engine.dispose()

    n, r = args.batches, args.batches * args.results
    print(f"database: {url.split('://')[0]}; {n} batches x {args.results} results")
    print(f"verify only (limit):    {n / verify_s:9.1f} batches/s  {r / verify_s:10.1f} results/s")
    print(f"verify + store:         {n / ingest_s:9.1f} batches/s  {r / ingest_s:10.1f} results/s")
    print(f"ratio store/limit:      {verify_s / ingest_s:9.3f}")


if __name__ == "__main__":
    main()
