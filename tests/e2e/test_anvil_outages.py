"""Outages with real Ethereum nodes (anvil) as operators, every monitor part a separate OS process
started through the real CLI (``monitor serve``, ``monitor probe``, ``monitor db upgrade``,
``monitor registry apply``):

- the collector is stopped for a minute while three probes run, then started again on its port;
- the PostgreSQL server under the collector is stopped for a few seconds, then started again;
- a probe is killed with SIGKILL in the middle of a round (an operator hung by SIGSTOP, while
  the probe's rounds go on), and at random moments, and restarted on its key and outbox.

Each time, every round a probe made (counted by its outbox's AUTOINCREMENT sequence, which gives
every queued batch a number once and never again) is in the database exactly once, whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, Row, func, select

from monitor.db.models import Batch, Probe, Result
from monitor.db.session import make_engine, session_scope
from tests.e2e.test_processes import Processes, responds, wait_for
from tests.support.anvil import AnvilNode, ChainDriver, anvil_available, free_port, write_registry
from tests.support.outbox import outbox_counts
from tests.support.postgres import PostgresCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not anvil_available(), reason="anvil not installed: make test"),
]

CHAIN_ID = 31337
OPERATORS = ("alpha", "bravo", "charlie", "delta")
PROBES = 3
INTERVAL_S = 1.0
MAX_GAP_S = 2.5 * INTERVAL_S
WARMUP_BATCHES = 3
STARTUP_TIMEOUT_S = 30.0
WARMUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# The probes' delivery backs off 1 s doubling to 60 s (+-20 %): after a long outage the retry
# that finds the collector back may come up to 72 s after it returned.
LONG_DRAIN_TIMEOUT_S = 100.0
DRAIN_TIMEOUT_S = 45.0


def rounds_made(outbox: Path) -> int:
    """Batches ever queued in ``outbox``: ``pending`` is AUTOINCREMENT, so its sequence counts
    every insert once, whatever was deleted (acknowledged) since."""
    db = sqlite3.connect(outbox, timeout=5)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'pending'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:  # no table yet: nothing queued
        return 0
    finally:
        db.close()


def integrity(outbox: Path) -> list[str]:
    db = sqlite3.connect(outbox, timeout=5)
    try:
        return [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
    finally:
        db.close()


def oldest_pending_body(outbox: Path) -> bytes | None:
    db = sqlite3.connect(outbox, timeout=5)
    try:
        row = db.execute("SELECT body FROM pending ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else bytes(row[0])
    finally:
        db.close()


def stored_batches(engine: Engine) -> Sequence[Row[Any]]:
    """Every stored batch with its probe's address and the number of result rows it has."""
    per_batch = (
        select(Result.batch_id.label("id"), func.count().label("n"))
        .group_by(Result.batch_id)
        .subquery()
    )
    with session_scope(engine) as session:
        return session.execute(
            select(
                Probe.address,
                Batch.batch_id,
                Batch.created_at,
                Batch.received_at,
                Batch.result_count,
                func.coalesce(per_batch.c.n, 0).label("n_results"),
            )
            .join(Probe, Probe.id == Batch.probe_id)
            .outerjoin(per_batch, per_batch.c.id == Batch.id)
        ).all()


def delivered_counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Probe.address, func.count(Batch.id))
            .join(Batch, Batch.probe_id == Probe.id)
            .group_by(Probe.address)
        ).all()
    return {address: int(n) for address, n in rows}


@dataclass
class Deployment:
    """Four anvil nodes on one chain (one operator each), keys for three probes, and the monitor
    processes, all started through the CLI from ``workdir`` (logs there too)."""

    workdir: Path
    procs: Processes
    nodes: list[AnvilNode]
    driver: ChainDriver
    api_port: int = field(default_factory=free_port)
    keys: list[Path] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    probes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _shut_down: bool = False

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def outboxes(self) -> list[Path]:
        return [k.with_name(k.name + ".outbox.sqlite") for k in self.keys]

    def prepare(self, database_url: str) -> None:
        """Keys, registry file, schema and registry, each through the CLI."""
        self.procs.env["MONITOR_DATABASE_URL"] = database_url
        self.procs.env["MONITOR_SCORING_INTERVAL_S"] = "1"
        self.keys = [self.workdir / f"probe-{i}.key" for i in range(PROBES)]
        self.addresses = [
            out.strip() for out in self.procs.run(*(("keygen", "--out", str(k)) for k in self.keys))
        ]
        registry_file = write_registry(
            self.workdir / "registry.yaml",
            {node.name: node.url for node in self.nodes},
            self.addresses,
            chain_id=CHAIN_ID,
        )
        self.procs.run(("db", "upgrade"))
        [applied] = self.procs.run(("registry", "apply", str(registry_file)))
        assert f"probes: {PROBES} created" in applied, applied

    def start_collector(self, name: str) -> subprocess.Popen[bytes]:
        proc = self.procs.start(name, "serve", "--port", str(self.api_port))
        wait_for(f"{name} to listen", lambda: responds(f"{self.api}/healthz"), self.procs, 30.0)
        return proc

    def start_probe(self, i: int) -> subprocess.Popen[bytes]:
        proc = self.procs.start(
            f"probe-{i}",
            "probe",
            "--collector",
            self.api,
            "--key",
            str(self.keys[i]),
            "--interval",
            str(INTERVAL_S),
        )
        self.probes[i] = proc
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL, on purpose: not a death ``check_alive`` should report."""
        self.procs.stopped.append(proc)
        proc.kill()
        proc.wait(timeout=5)

    def wait_warm(self, engine: Engine) -> None:
        """Every probe has delivered a few batches, and every operator was seen correct."""

        def warm() -> bool:
            counts = delivered_counts(engine)
            if any(counts.get(a, 0) < WARMUP_BATCHES for a in self.addresses):
                return False
            with session_scope(engine) as session:
                correct = session.scalars(
                    select(Result.operator_id).where(Result.correct.is_(True)).distinct()
                ).all()
            return set(correct) == set(OPERATORS)

        wait_for(
            f"{WARMUP_BATCHES} batches from every probe, every operator correct",
            warm,
            self.procs,
            WARMUP_TIMEOUT_S,
            step=0.25,
        )

    def wait_drained(self, timeout: float) -> None:
        wait_for(
            "every outbox to drain",
            lambda: all(outbox_counts(o) == (0, 0) for o in self.outboxes),
            self.procs,
            timeout,
            step=0.2,
        )

    def stop_probes_between_rounds(self, engine: Engine) -> None:
        """SIGTERM each probe just after it delivered a fresh batch and its outbox is empty, so
        none is stopped with a batch made and not yet delivered; each must exit 0."""
        before = delivered_counts(engine)
        running = dict(self.probes)
        deadline = time.monotonic() + 15 * INTERVAL_S
        while running:
            counts = delivered_counts(engine)
            for i, proc in list(running.items()):
                address = self.addresses[i]
                if (
                    counts.get(address, 0) > before.get(address, 0)
                    and outbox_counts(self.outboxes[i])[0] == 0
                ):
                    self.procs.terminate(proc)
                    del running[i]
            if time.monotonic() > deadline:
                raise AssertionError(f"no fresh delivery from probes {sorted(running)}")
            self.procs.check_alive()
            time.sleep(0.05)
        for i, proc in self.probes.items():
            assert self.procs.stop(proc) == 0, f"probe-{i} did not exit 0 on SIGTERM"

    def assert_exactly_once(
        self, rows: Sequence[Row[Any]], *, max_gap_s: float | None
    ) -> dict[str, list[Row[Any]]]:
        """Every batch whole, none twice, every round of every probe stored; the batches per
        probe in creation order."""
        seen = Counter((r.address, r.batch_id) for r in rows)
        assert not [k for k, n in seen.items() if n > 1], "a (probe, batch_id) is stored twice"
        partial = [
            (r.batch_id, r.result_count, r.n_results)
            for r in rows
            if not r.result_count == r.n_results == len(OPERATORS)
        ]
        assert not partial, f"batches not whole (batch_id, result_count, rows): {partial}"
        by_probe = {}
        for address, outbox in zip(self.addresses, self.outboxes, strict=True):
            assert integrity(outbox) == ["ok"], address
            assert outbox_counts(outbox) == (0, 0), (address, "(pending, rejected)")
            mine = sorted((r for r in rows if r.address == address), key=lambda r: r.created_at)
            made = rounds_made(outbox)
            assert made > 0
            assert len(mine) == made, f"{address}: {made} rounds made, {len(mine)} stored"
            if max_gap_s is not None:
                gaps = [
                    (b.created_at - a.created_at).total_seconds()
                    for a, b in itertools.pairwise(mine)
                ]
                assert max(gaps) < max_gap_s, (address, max(gaps))
            by_probe[address] = mine
        return by_probe

    def shutdown(self) -> None:
        """Idempotent: hung nodes continued first (a probe stuck on one would not stop in
        time), then every monitor process, then the chain."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            for node in self.nodes:
                if node.process is not None:
                    with contextlib.suppress(ProcessLookupError):
                        node.resume_process()
            self.procs.stop_all()
        finally:
            self.driver.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    procs = Processes(tmp_path, env)
    nodes: list[AnvilNode] = []
    driver: ChainDriver | None = None
    dep: Deployment | None = None
    try:
        for name in OPERATORS:
            nodes.append(AnvilNode(name, chain_id=CHAIN_ID, log_dir=tmp_path).start())
        driver = ChainDriver(nodes, block_time_s=1.0).start(warmup_blocks=5)
        dep = Deployment(tmp_path, procs, nodes, driver)
        yield dep
    finally:
        if dep is not None:
            dep.shutdown()
        else:
            procs.stop_all()
            if driver is not None:
                driver.stop()
        for node in nodes:
            node.stop()
        if driver is not None and driver.errors:
            print("chain driver:", *driver.errors, sep="\n  ")
        print(procs.logs())  # shown by pytest when the test failed


def test_collector_down_a_minute_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    """SQLite; ``monitor serve`` stopped (SIGTERM) for 60 s while three probes run rounds against
    four anvil nodes, then started again on the same port."""
    outage_s = 60.0
    dep = deployment
    database_url = f"sqlite:///{dep.workdir / 'monitor.db'}"
    dep.prepare(database_url)
    collector = dep.start_collector("collector-1")
    for i in range(PROBES):
        dep.start_probe(i)
    engine = make_engine(database_url)
    try:
        dep.wait_warm(engine)

        assert dep.procs.stop(collector) in (0, -signal.SIGTERM), "serve did not stop on SIGTERM"
        outage_start = datetime.now(UTC)
        deadline = time.monotonic() + outage_s
        while time.monotonic() < deadline:
            dep.procs.check_alive()
            time.sleep(1.0)
        assert not responds(f"{dep.api}/healthz")
        pending = [outbox_counts(o)[0] for o in dep.outboxes]
        assert all(p >= 0.8 * outage_s / INTERVAL_S for p in pending), pending
        outage_end = datetime.now(UTC)

        dep.start_collector("collector-2")
        back = datetime.now(UTC)
        dep.wait_drained(LONG_DRAIN_TIMEOUT_S)
        drained = datetime.now(UTC)
        print(f"outbox drain took {(drained - back).total_seconds():.1f} s after the restart")
        dep.stop_probes_between_rounds(engine)
        rows = stored_batches(engine)
    finally:
        engine.dispose()

    by_probe = dep.assert_exactly_once(rows, max_gap_s=MAX_GAP_S)
    for address, mine in by_probe.items():
        late = [r for r in mine if outage_start <= r.created_at <= outage_end]
        assert len(late) >= 0.8 * outage_s / INTERVAL_S, (address, len(late))
        # Made while nothing listened: delivered from the outbox once serve was back.
        assert all(r.received_at >= outage_end - timedelta(seconds=0.5) for r in late), address


# -- PostgreSQL outage ---------------------------------------------------------------------------


def pg_stop(cluster: PostgresCluster) -> None:
    """``pg_ctl stop -m fast``, as PostgresCluster does it (as the postgres user when root)."""
    assert cluster.data_dir is not None
    res = cluster._run(
        "pg_ctl", "stop", "-D", str(cluster.data_dir), "-m", "fast", "-w", "-t", "30",
        timeout=40,
    )  # fmt: skip
    assert res.returncode == 0, f"pg_ctl stop: {res.stdout}{res.stderr}"
    # Forget the postmaster's pid: should the test fail before the restart, the cluster's own
    # stop must not fall back to signalling a pid that may belong to another process by then.
    cluster.pid = None


def pg_start_same_port(cluster: PostgresCluster) -> None:
    """Start the stopped server again on its data directory and its port (not a new one, as
    ``PostgresCluster._start_server`` would pick)."""
    assert cluster.data_dir is not None and cluster.log_file is not None
    res = cluster._run(
        "pg_ctl", "start", "-D", str(cluster.data_dir), "-l", str(cluster.log_file),
        "-o", f"-p {cluster.port}", "-w", "-t", "30",
        timeout=40,
    )  # fmt: skip
    cluster.pid = cluster._read_pid()
    assert res.returncode == 0, (
        f"pg_ctl start on port {cluster.port}: {res.stdout}{res.stderr}\n{cluster._read_log()}"
    )


def get_status(url: str, **kwargs: Any) -> tuple[int, dict[str, Any], httpx.Headers]:
    response = httpx.request(kwargs.pop("method", "GET"), url, timeout=10, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = {"text": response.text}
    return response.status_code, body, response.headers


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", re.MULTILINE)


def unexpected_tracebacks(log: str) -> list[str]:
    """Log records of a collector with a traceback, except the scoring job's ``scoring run
    failed`` on a database that cannot be reached (it logs its exception, then retries)."""
    starts = [m.start() for m in LOG_RECORD.finditer(log)] + [len(log)]
    records = [log[a:b] for a, b in itertools.pairwise(starts)]
    return [
        r
        for r in records
        if "Traceback" in r
        and not (
            "ERROR monitor.scoring: scoring run failed" in r.splitlines()[0]
            and r.rstrip().splitlines()[-1].startswith("(Background on this error")
            and "sqlalchemy.exc.OperationalError" in r
        )
    ]


@pytest.mark.postgres
def test_database_down_answers_503_and_loses_nothing(deployment: Deployment) -> None:
    """A PostgreSQL server of the test's own under ``monitor serve``; stopped (fast) for ~8 s
    while everything runs, then started again on the same data directory and port."""
    outage_s = 8.0
    dep = deployment
    with PostgresCluster() as cluster:
        try:
            cluster.create_database("monitor")
            database_url = cluster.url("monitor")
            dep.prepare(database_url)
            dep.start_collector("collector")
            for i in range(PROBES):
                dep.start_probe(i)
            engine = make_engine(database_url)
            try:
                dep.wait_warm(engine)
                status, _, _ = get_status(f"{dep.api}/readyz")
                assert status == 200
            finally:
                engine.dispose()

            pg_stop(cluster)
            outage_start = datetime.now(UTC)
            pending_at_start = [outbox_counts(o)[0] for o in dep.outboxes]
            readyz, posts = [], []
            deadline = time.monotonic() + outage_s
            while time.monotonic() < deadline:
                dep.procs.check_alive()
                readyz.append(get_status(f"{dep.api}/readyz"))
                body = oldest_pending_body(dep.outboxes[0])
                if body is not None:  # a real signed batch, as the probe sends it
                    posts.append(
                        get_status(
                            f"{dep.api}/v1/batches",
                            method="POST",
                            content=body,
                            headers={"content-type": "application/json"},
                        )
                    )
                time.sleep(0.5)
            pending_at_end = [outbox_counts(o)[0] for o in dep.outboxes]
            outage_end = datetime.now(UTC)
            pg_start_same_port(cluster)

            assert readyz and all(
                s == 503 and b["error"]["code"] == "database_unreachable" for s, b, _ in readyz
            ), [(s, b) for s, b, _ in readyz]
            assert posts and all(
                s == 503
                and b["error"]["code"] == "database_unavailable"
                and h.get("retry-after") == "5"
                for s, b, h in posts
            ), [(s, b) for s, b, _ in posts]
            # The probes kept making rounds into their outboxes.
            assert all(
                end >= start + 0.6 * outage_s / INTERVAL_S
                for start, end in zip(pending_at_start, pending_at_end, strict=True)
            ), (pending_at_start, pending_at_end)

            wait_for(
                "/readyz 200 after the restart",
                lambda: get_status(f"{dep.api}/readyz")[0] == 200,
                dep.procs,
                30.0,
                step=0.25,
            )
            dep.wait_drained(DRAIN_TIMEOUT_S)
            engine = make_engine(database_url)
            try:
                dep.stop_probes_between_rounds(engine)
                rows = stored_batches(engine)
            finally:
                engine.dispose()
            by_probe = dep.assert_exactly_once(rows, max_gap_s=MAX_GAP_S)
            for address, mine in by_probe.items():
                late = [r for r in mine if outage_start <= r.created_at <= outage_end]
                assert len(late) >= 0.6 * outage_s / INTERVAL_S, (address, len(late))
                assert all(r.received_at >= outage_end for r in late), address

            dep.shutdown()
            collector_log = (dep.workdir / "collector.log").read_text(errors="replace")
            assert "unhandled error" not in collector_log  # the 500 handler's log line
            assert "Exception in ASGI application" not in collector_log
            assert not unexpected_tracebacks(collector_log)
            for i in range(PROBES):
                probe_log = (dep.workdir / f"probe-{i}.log").read_text(errors="replace")
                assert not re.search(r"HTTP 5(?!03)\d\d", probe_log), probe_log
                assert "refused" not in probe_log, probe_log
            assert any(
                "HTTP 503" in (dep.workdir / f"probe-{i}.log").read_text() for i in range(PROBES)
            ), "no probe saw the 503"
        finally:
            dep.shutdown()  # before the cluster goes
            print(f"----- postgresql server.log -----\n{cluster._read_log()}")


# -- SIGKILL ---------------------------------------------------------------------------------------


def test_probe_killed_mid_round_resumes_without_partial_batches(deployment: Deployment) -> None:
    """SQLite. Probe 0 is killed with SIGKILL while its round waits on a hung operator (anvil
    under SIGSTOP; the probe's RPC timeout is 5 s), twice, then at random moments three times,
    each time restarted on the same key and outbox."""
    seed = random.randrange(1 << 32)
    print(f"random seed {seed}")
    rng = random.Random(seed)
    dep = deployment
    database_url = f"sqlite:///{dep.workdir / 'monitor.db'}"
    dep.prepare(database_url)
    dep.start_collector("collector")
    for i in range(PROBES):
        dep.start_probe(i)
    victim, outbox, address = 0, dep.outboxes[0], dep.addresses[0]
    hung = dep.nodes[-1]
    engine = make_engine(database_url)

    def resumes(since: datetime) -> None:
        """The restarted probe delivers a batch it made after ``since``."""

        def fresh() -> bool:
            with session_scope(engine) as session:
                return bool(
                    session.scalar(
                        select(func.count())
                        .select_from(Batch)
                        .join(Probe, Probe.id == Batch.probe_id)
                        .where(Probe.address == address, Batch.created_at > since)
                    )
                )

        wait_for("the restarted probe to deliver", fresh, dep.procs, 30.0, step=0.2)

    try:
        dep.wait_warm(engine)

        # 1. Killed inside a round: the round waits on a hung node for up to 5 s. (The
        # probe's other endpoints keep their cadence meanwhile: rounds go on being queued, each
        # closed once the hung node's call has timed out.)
        for _ in range(2):
            dep.driver.stall(hung)
            hung.pause()
            try:
                time.sleep(1.0)  # a visit made meanwhile is now stuck on the hung node
                made = rounds_made(outbox)
                time.sleep(5.5)
                # The hung node's first timed-out visit has let its round close: not stuck.
                assert rounds_made(outbox) > made, "the probe's rounds stopped on one node"
                dep.kill(dep.probes[victim])
            finally:
                hung.resume_process()
                dep.driver.resume(hung)
            assert integrity(outbox) == ["ok"]
            restarted = datetime.now(UTC)
            dep.start_probe(victim)
            resumes(restarted)

        # 2. Killed at random moments between 0 and 2.5 s after a delivery.
        for _ in range(3):
            time.sleep(rng.uniform(0.0, 2.5))
            dep.kill(dep.probes[victim])
            assert integrity(outbox) == ["ok"]
            restarted = datetime.now(UTC)
            dep.start_probe(victim)
            resumes(restarted)

        dep.wait_drained(DRAIN_TIMEOUT_S)
        dep.stop_probes_between_rounds(engine)
        rows = stored_batches(engine)
    finally:
        engine.dispose()

    # Rounds cut short by the kills were never signed nor queued; everything queued is stored,
    # whole, once (a batch stored whose acknowledgement the kill lost is resent as a duplicate).
    dep.assert_exactly_once(rows, max_gap_s=None)
    assert len(dep.procs.stopped) >= 5 + PROBES
