"""Ingest throughput against its limits, side by side in one run, on SQLite and on PostgreSQL.

    .venv/bin/python bench/ingest.py [--batches 200] [--results 500] [--clients 8] [--repeat 3]
                                     [--database-url postgresql+psycopg://...] [--only sqlite]
                                     [--quick]

Without --database-url a throwaway PostgreSQL cluster is started (tests.support.postgres) and
stopped at the end. The same signed batches (one signature per batch) go through:

* the limits: signature recovery alone (coincurve, through eth-account), verify_batch alone
  (results hash + recovery), and on PostgreSQL ``COPY results FROM STDIN`` of the same result
  rows (psycopg 3 ``cursor.copy``), all rows in one COPY and one COPY per batch;
* the collector's service in-process (one transaction per batch, as the endpoint runs it);
* the real endpoint: ``monitor serve`` (uvicorn, uvloop, httptools) as a subprocess, POST
  /v1/batches from ``--clients`` concurrent keep-alive connections, with the server's CPU time
  and peak RSS (VmHWM).

Prints batches/s and results/s of each, and the ratios to the limits. On PostgreSQL the pair
(COPY limit, HTTP) is measured ``--repeat`` times back to back and the target (HTTP results/s at
least half the COPY limit) judged on the median ratio: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, insert, select
from support import bench_chain, fresh_postgres_database, monitor_serve, post_all, postgres_url

from monitor.db.migrate import upgrade
from monitor.db.models import Batch, Endpoint, Operator, Probe, Result
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ProbeResult, SignedBatch
from monitor.ingest.service import (
    RESULT_COLUMNS,
    batch_hash,
    ingest_batch,
    parse_batch,
    result_row,
)
from monitor.signing.eip712 import sign_batch, typed_data, verify_batch


@dataclass
class Rate:
    label: str
    seconds: float
    batches: int
    results: int

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds

    @property
    def results_per_s(self) -> float:
        return self.results / self.seconds


def seed(url: str, account: LocalAccount, endpoints: int) -> list[int]:
    """A chain, an operator, the probe and ``endpoints`` endpoints; their ids."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            session.add(bench_chain())
            session.add(Operator(id="op", name="Op"))
            session.add(Probe(address=account.address, name="bench", region="here"))
            session.flush()
            rows = [
                Endpoint(operator_id="op", chain_id=1, url=f"http://127.0.0.1/{i}")
                for i in range(endpoints)
            ]
            session.add_all(rows)
            session.flush()
            return [e.id for e in rows]
    finally:
        engine.dispose()


def make_batches(account: LocalAccount, endpoint_ids: list[int], batches: int) -> list[SignedBatch]:
    """One round per batch, one result per endpoint (a probe sends its round as one batch)."""
    now_ms = time.time_ns() // 1_000_000
    out = []
    for b in range(batches):
        results = []
        for i, eid in enumerate(endpoint_ids):
            up = i % 50 != 0  # one endpoint in 50 times out
            results.append(
                ProbeResult(
                    endpoint_id=eid,
                    operator_id="op",
                    chain_id=1,
                    observed_at_ms=now_ms - 60_000 + b,
                    ok=up,
                    error=None if up else "timeout",
                    latency_us=1234 + i if up else None,
                    head=1000 + b if up else None,
                    reference_head=1000 + b,
                    lag_blocks=0 if up else None,
                    lag_ms=0 if up else None,
                    check_height=994 + b if up else None,
                    block_hash="0x" + "ab" * 32 if up else None,
                    correct=True if up else None,
                )
            )
        out.append(sign_batch(account, results, created_at_ms=now_ms))
    return out


# --- the limits ---------------------------------------------------------------------------------


def signature_limits(batches: Sequence[SignedBatch], bodies: Sequence[bytes]) -> list[Rate]:
    n, r = len(batches), sum(len(b.results) for b in batches)
    signables = [
        encode_typed_data(full_message=typed_data(b.message.model_dump())) for b in batches
    ]
    started = time.perf_counter()
    for signable, b in zip(signables, batches, strict=True):
        Account.recover_message(signable, signature=bytes.fromhex(b.signature[2:]))
    recover_s = time.perf_counter() - started
    started = time.perf_counter()
    for b in batches:
        verify_batch(b)
    verify_s = time.perf_counter() - started
    started = time.perf_counter()
    for body in bodies:
        verify_batch(parse_batch(body))
    parse_verify_s = time.perf_counter() - started
    return [
        Rate("signature recovery alone (coincurve)", recover_s, n, r),
        Rate("verify_batch alone (results hash + recovery)", verify_s, n, r),
        Rate("parse + verify_batch (no database)", parse_verify_s, n, r),
    ]


def copy_limits(url: str, batches: Sequence[SignedBatch], probe_id: int) -> list[Rate]:
    """``COPY results FROM STDIN`` of the rows the service would store, into the real table
    (its indexes and foreign keys), the batch rows inserted beforehand (not timed)."""
    import psycopg
    from sqlalchemy.engine import make_url

    engine = make_engine(url)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        session.execute(
            insert(Batch),
            [
                {
                    "probe_id": probe_id,
                    "batch_id": f"copy-{i}",
                    "created_at": now,
                    "received_at": now,
                    "results_hash": b.message.resultsHash,
                    "signature": b.signature,
                    "result_count": len(b.results),
                    "body": "",
                    "body_hash": batch_hash(f"copy-{i}".encode()),
                }
                for i, b in enumerate(batches)
            ],
        )
    engine.dispose()
    per_batch = [
        [
            (
                i + 1,
                *result_row(
                    r,
                    probe_id=probe_id,
                    observed_at=datetime.fromtimestamp(r.observed_at_ms / 1000, tz=UTC),
                ),
            )
            for r in b.results
        ]
        for i, b in enumerate(batches)
    ]
    statement = f"COPY results ({', '.join(RESULT_COLUMNS)}) FROM STDIN"
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    n, r = len(batches), sum(len(rows) for rows in per_batch)
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        for rows in per_batch:  # one transaction per batch, as the collector commits
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        per_batch_s = time.perf_counter() - started
        conn.execute("TRUNCATE results")
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
            for rows in per_batch:
                for row in rows:
                    copy.write_row(row)
        bulk_s = time.perf_counter() - started
    return [
        Rate("COPY, all rows in one statement (the limit)", bulk_s, n, r),
        Rate("COPY, one transaction per batch", per_batch_s, n, r),
    ]


# --- the collector --------------------------------------------------------------------------------


def service_loop(url: str, bodies: Sequence[bytes], results: int) -> Rate:
    engine = make_engine(url)
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
    seconds = time.perf_counter() - started
    engine.dispose()
    check_stored(url, len(bodies), results)
    return Rate("service in-process (verify + store)", seconds, len(bodies), results)


def check_stored(url: str, batches: int, results: int) -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        stored = (
            connection.scalar(select(func.count()).select_from(Batch)),
            connection.scalar(select(func.count()).select_from(Result)),
        )
    engine.dispose()
    if stored != (batches, results):
        raise RuntimeError(f"stored {stored} (batches, results); expected {(batches, results)}")


def over_http(
    url: str, bodies: Sequence[bytes], results: int, clients: int, workdir: Path
) -> tuple[Rate, float, float]:
    """POST /v1/batches to ``monitor serve``; the rate, the server's CPU seconds during the load
    and its peak RSS in MiB."""
    with monitor_serve(url, workdir) as server:
        time.sleep(1.0)  # the jobs' first (empty) runs at start
        before = server.stats()
        started = time.perf_counter()
        statuses = post_all(server.port, "/v1/batches", bodies, clients)
        seconds = time.perf_counter() - started
        after = server.stats()
        print(f"  monitor serve loaded: {server.loaded('uvloop', 'httptools')}")
        if server.proc is None or server.proc.poll() is not None:
            raise RuntimeError(f"monitor serve exited: {server.log.read_text()[-3000:]}")
    refused = [s for s in statuses if s != 200]
    if refused:
        raise RuntimeError(f"{len(refused)} batches refused, e.g. {refused[:5]}")
    check_stored(url, len(bodies), results)
    rate = Rate(f"POST /v1/batches, {clients} clients", seconds, len(bodies), results)
    return rate, after.cpu_s - before.cpu_s, after.peak_rss_mib


def report(database: str, rates: Sequence[Rate], limit: Rate, copy: Rate | None) -> None:
    print(f"\n== {database}")
    print(f"{'':52} {'batches/s':>10} {'results/s':>11} {'/verify':>8} {'/COPY':>7}")
    for rate in rates:
        vs_copy = f"{rate.results_per_s / copy.results_per_s:7.3f}" if copy else f"{'':7}"
        print(
            f"{rate.label:52} {rate.batches_per_s:10.1f} {rate.results_per_s:11.0f} "
            f"{rate.results_per_s / limit.results_per_s:8.3f} {vs_copy}"
        )


def run_database(
    kind: str,
    base_url: str,
    account: LocalAccount,
    batches: Sequence[SignedBatch],
    bodies: Sequence[bytes],
    endpoint_ids: list[int],
    limits: list[Rate],
    clients: int,
    workdir: Path,
    repeat: int,
) -> None:
    r = sum(len(b.results) for b in batches)

    def fresh(name: str) -> str:
        if kind == "sqlite":
            url = f"sqlite:///{workdir / f'{name}.db'}"
        else:
            url = fresh_postgres_database(base_url, name)
        assert seed(url, account, len(endpoint_ids)) == endpoint_ids
        return url

    rates = list(limits)
    copy = None
    if kind == "postgresql":
        copy_rates = copy_limits(fresh("bench_copy"), batches, probe_id=1)
        copy = copy_rates[0]
        rates += copy_rates
    rates.append(service_loop(fresh("bench_service"), bodies, r))
    http, cpu_s, rss = over_http(fresh("bench_http"), bodies, r, clients, workdir)
    rates.append(http)
    report(kind, rates, limits[1], copy)
    print(
        f"collector process: {cpu_s:.2f} CPU s for {http.seconds:.2f} s "
        f"({cpu_s / http.seconds:.2f} cores), {1e6 * cpu_s / r:.1f} CPU us per result; "
        f"peak RSS {rss:.0f} MiB"
    )
    if copy is not None:
        # The machine is shared and noisy: the pair (COPY limit, HTTP) is measured again
        # ``repeat - 1`` times, back to back, and the target judged on the median ratio.
        ratios = [http.results_per_s / copy.results_per_s]
        for i in range(1, repeat):
            again = copy_limits(fresh(f"bench_copy{i}"), batches, probe_id=1)[0]
            http_again = over_http(fresh(f"bench_http{i}"), bodies, r, clients, workdir)[0]
            ratios.append(http_again.results_per_s / again.results_per_s)
            print(
                f"repeat {i}: COPY {again.results_per_s:.0f} results/s, "
                f"HTTP {http_again.results_per_s:.0f} results/s"
            )
        ratio = statistics.median(ratios)
        met = "met" if ratio >= 0.5 else "NOT met"
        print(
            f"HTTP/COPY per run: {', '.join(f'{x:.3f}' for x in ratios)}; target results/s >= "
            f"0.5 x COPY limit: median {ratio:.3f} -> {met}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--results", type=int, default=500, help="results per batch")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=3, help="PostgreSQL COPY/HTTP pairs (median ratio judged)"
    )
    parser.add_argument("--database-url", help="PostgreSQL server to use (else a throwaway one)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="60 batches x 500 results, --repeat 1")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="4 batches x 50 results, 2 clients: seconds (the suite)",
    )
    args = parser.parse_args()
    if args.quick:
        args.batches, args.results, args.repeat = 60, 500, 1
    if args.smoke:
        args.batches, args.results, args.repeat, args.clients = 4, 50, 1, 2
    account = Account.create()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        endpoint_ids = list(range(1, args.results + 1))  # what seed() creates in a fresh database
        batches = make_batches(account, endpoint_ids, args.batches)
        bodies = [b.model_dump_json().encode() for b in batches]
        print(
            f"{args.batches} batches x {args.results} results ({sum(map(len, bodies)) / 1e6:.1f} "
            f"MB of JSON), {args.clients} HTTP clients; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        limits = signature_limits(batches, bodies)
        common = (account, batches, bodies, endpoint_ids, limits)
        rest = (args.clients, workdir, args.repeat)
        if args.only in (None, "sqlite"):
            run_database("sqlite", "", *common, *rest)
        if args.only in (None, "postgresql"):
            with postgres_url(args.database_url) as url:
                run_database("postgresql", url, *common, *rest)


if __name__ == "__main__":
    main()
