"""Reputation API under concurrent load (wrk), against a constant endpoint of the same app.

    .venv/bin/python bench/api_load.py [--endpoints 200] [--seconds 10] [--connections 16]
                                       [--database-url URL | --postgresql] [--quick]

Seeds one chain with ``--endpoints`` endpoints (20 operators), 3 probes and 5 minutes of their
results (signed batches through the collector's service), then 5 scoring runs
(monitor.scoring.job.run_scoring: the 5m and 1h windows). Serves the app with uvicorn, uvloop and
httptools (bench/api_server.py: ``monitor serve``'s app plus GET /bench/constant) and loads, one
after the other with wrk: /bench/constant, /v1/weights, /v1/scores, /bench/constant again (the
constant figure is the mean of the two, to cancel drift). SQLite unless --database-url or
--postgresql (a throwaway cluster, tests.support.postgres).
Prints requests/s, p50 and p99 of each, and the ratios to the constant endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from eth_account import Account
from support import PYTHON, ROOT, Server, WrkFigures, bench_chain, free_port, postgres_url, wrk

from monitor.db.migrate import upgrade
from monitor.db.models import Endpoint, Operator, Probe
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.ingest.service import ingest_batch
from monitor.scoring.job import run_scoring
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch

OPERATORS = 20
PROBES = 3
ROUNDS = 30  # 5 minutes at 10 s


def seed(url: str, endpoints: int) -> None:
    upgrade(url)
    engine = make_engine(url)
    probes = [Account.create() for _ in range(PROBES)]
    with session_scope(engine) as session:
        session.add(bench_chain())
        session.add_all(Operator(id=f"op{i:02d}", name=f"Operator {i}") for i in range(OPERATORS))
        session.add_all(
            Probe(address=p.address, name=f"probe{i}", region=f"region{i}")
            for i, p in enumerate(probes)
        )
        session.flush()
        rows = [
            Endpoint(
                operator_id=f"op{i % OPERATORS:02d}",
                chain_id=1,
                url=f"https://user:secret@rpc{i}.example.com/v1/KEY{i}",
            )
            for i in range(endpoints)
        ]
        session.add_all(rows)
        session.flush()
        owners = [(e.id, e.operator_id) for e in rows]
    now_ms = time.time_ns() // 1_000_000
    start = now_ms - ROUNDS * 10_000
    for p, account in enumerate(probes):
        for k in range(ROUNDS):
            at, head = start + k * 10_000, 10_000 + k
            results = []
            for i, (eid, operator_id) in enumerate(owners):
                down = i % 17 == 0 and k % 3 == 0  # some endpoints fail now and then
                lag = 3 if i % 23 == 0 else 0
                results.append(
                    ProbeResult(
                        endpoint_id=eid,
                        operator_id=operator_id,
                        chain_id=1,
                        observed_at_ms=at,
                        ok=not down,
                        error="timeout" if down else None,
                        latency_us=None if down else 20_000 + 1_500 * (i % 40) + 700 * p,
                        head=None if down else head - lag,
                        reference_head=head,
                        lag_blocks=None if down else lag,
                        lag_ms=None if down else lag * 12_000,
                        check_height=None if down else head - 6,
                        block_hash=None if down else "0x" + f"{head:064x}",
                        correct=None if down else True,
                    )
                )
            body = sign_batch(account, results, created_at_ms=at + 2_000).model_dump_json()
            with session_scope(engine) as session:
                ingest_batch(
                    session,
                    body=body.encode(),
                    now=datetime.now(UTC),
                    clock_skew=timedelta(seconds=60),
                    max_results=100_000,
                )
    settings = Settings(database_url=url)
    for back in (40, 30, 20, 10, 0):  # several runs: the API serves the latest
        run_scoring(engine, settings, as_of=datetime.now(UTC) - timedelta(seconds=back))
    engine.dispose()


def line(name: str, f: WrkFigures, constant: float) -> str:
    return (
        f"{name:34} {f.requests_per_s:9.0f} {f.p50_ms:8.2f} {f.p99_ms:8.2f} "
        f"{f.requests_per_s / constant:7.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", help="an empty database (else SQLite in a temp dir)")
    parser.add_argument(
        "--postgresql", action="store_true", help="a throwaway PostgreSQL cluster instead of SQLite"
    )
    parser.add_argument("--quick", action="store_true", help="3 s per endpoint")
    parser.add_argument("--smoke", action="store_true", help="20 endpoints, 1 s each (the suite)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3
    if args.smoke:
        args.seconds, args.endpoints = 1, 20
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = args.database_url or f"sqlite:///{workdir / 'api.db'}"
        if args.postgresql and not args.database_url:
            url = stack.enter_context(postgres_url(None))
        started = time.perf_counter()
        seed(url, args.endpoints)
        print(
            f"seeded 1 chain x {args.endpoints} endpoints, {PROBES} probes x {ROUNDS} rounds, "
            f"5 scoring runs in {time.perf_counter() - started:.1f} s ({url.split('://')[0]}); "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        port = free_port()
        env = {
            "MONITOR_DATABASE_URL": url,
            "MONITOR_HOST": "127.0.0.1",
            "MONITOR_PORT": str(port),
            "MONITOR_SERVICE_KEY_FILE": str(workdir / "collector.key"),
        }
        argv = [PYTHON, str(ROOT / "bench" / "api_server.py")]
        with Server(argv, port=port, env=env, log=workdir / "server.log") as server:
            paths = {
                "constant": "/bench/constant",
                "weights": "/v1/weights?chain_id=1",
                "scores": "/v1/scores?chain_id=1",
            }
            sizes = {}
            for name, path in paths.items():  # each answers, and is warm, before the load
                response = httpx.get(server.url + path, timeout=10)
                response.raise_for_status()
                sizes[name] = len(response.content)
            assert len(httpx.get(server.url + paths["weights"]).json()["weights"]) == args.endpoints
            figures: dict[str, WrkFigures] = {}
            for name in ("constant", "weights", "scores", "constant2"):
                path = paths[name.rstrip("2")]
                figures[name] = wrk(
                    server.url + path, seconds=args.seconds, connections=args.connections
                )
            stats = server.stats()
            loaded = server.loaded("uvloop", "httptools")
        constant = (figures["constant"].requests_per_s + figures["constant2"].requests_per_s) / 2
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s per endpoint; "
            f"answer sizes: {sizes} bytes"
        )
        print(f"{'':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'/const':>7}")
        print(line("GET /bench/constant (before)", figures["constant"], constant))
        print(line("GET /v1/weights?chain_id=1", figures["weights"], constant))
        print(line("GET /v1/scores?chain_id=1", figures["scores"], constant))
        print(line("GET /bench/constant (after)", figures["constant2"], constant))
        bad = {k: f.non_2xx for k, f in figures.items() if f.non_2xx}
        if bad:
            print(f"non-2xx answers: {bad}")
        ratio = figures["weights"].requests_per_s / constant
        print(
            f"weights/constant {ratio:.3f} (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
        )
        print(f"scores/constant  {figures['scores'].requests_per_s / constant:.3f}")
        print(f"server peak RSS {stats.peak_rss_mib:.0f} MiB; loaded: {loaded}")


if __name__ == "__main__":
    main()
