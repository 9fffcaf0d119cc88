"""Every benchmark in bench/ runs to the end in seconds (``--smoke``) and prints its table, so
none can rot unnoticed. No figure is judged here: figures are judged by the benchmarks' full
runs, side by side, in docs/performance.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# The smoke runs start servers and load both cores for seconds: one at a time, and never beside a
# multi-process test that judges timing (they share its xdist group, tests/e2e/conftest.py).
pytestmark = pytest.mark.xdist_group("e2e")


def run(script: str, *args: str, timeout: float = 180) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, f"{script}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def require(program: str, package: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} not found: apt-get install {package}")


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    name = f"bench_{os.getpid()}"
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


def test_probe_capacity_smoke() -> None:
    require("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    out = run("probe_capacity.py")
    assert "monitor probe" in out and "blackbox_exporter" in out
    assert "monitor probe / blackbox_exporter, same N, same run" in out


def test_ingest_smoke(pg_database: str) -> None:
    out = run("ingest.py", "--only", "postgresql", "--database-url", pg_database)
    assert "POST /v1/batches" in out and "COPY" in out


def test_api_load_smoke() -> None:
    require("wrk", "wrk")
    out = run("api_load.py")
    assert "weights/constant" in out


def test_sla_queries_smoke() -> None:
    out = run("sla_queries.py")
    assert "SLA report, last 30 days" in out and "uptime 365d" in out


def test_fleet_smoke(pg_database: str) -> None:
    out = run("fleet.py", "--database-url", pg_database)
    assert "scoring job" in out and "targets:" in out


def test_every_benchmark_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith(("_", "run_all"))}
    scripts.discard("support.py")
    scripts.discard("api_server.py")  # the server api_load.py starts
    tested = {"probe_capacity.py", "ingest.py", "api_load.py", "sla_queries.py", "fleet.py"}
    assert scripts == tested
