"""Shared fixtures: a database on SQLite and on a real PostgreSQL server (a throwaway cluster
started once per session), a registry with probe keys, the simnet and a collector over loopback."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, func, select

from monitor import simnet
from monitor.app import create_app
from monitor.db.migrate import upgrade
from monitor.db.models import Base
from monitor.db.session import make_engine, session_scope
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.support.postgres import PostgresCluster

TEMPLATE_DB = "monitor_template"
_db_names = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def collector_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One signing key for every collector the suite starts (in-process or as a process that
    inherits the environment), in a temp dir: nothing writes collector.key into the checkout."""
    path = tmp_path_factory.mktemp("collector-key") / "collector.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MONITOR_SERVICE_KEY_FILE", str(path))
        yield path


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as cluster:
        cluster.create_database(TEMPLATE_DB)
        upgrade(cluster.url(TEMPLATE_DB))  # migrate once; each test clones it
        yield cluster


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "monitor.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"test_{next(_db_names)}"
    cluster.create_database(name, template=TEMPLATE_DB)
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table: what 'stores nothing' is checked against."""
    with session_scope(engine) as session:
        return {
            name: session.scalar(select(func.count()).select_from(table)) or 0
            for name, table in Base.metadata.tables.items()
        }


@dataclass
class Network:
    """A simnet, a registry applied to the database, and the probes' keys."""

    sim: simnet.SimnetServer
    probes: list[LocalAccount]
    registry_file: Path
    chain_id: int


def start_network(
    engine: Engine,
    tmp_path: Path,
    operators: list[simnet.SimOperator],
    *,
    probes: int = 3,
    block_time_s: float = 1.0,
) -> tuple[simnet.SimnetServer, list[LocalAccount], Path]:
    chain_ids = {o.chain_id for o in operators}
    chains = {c: simnet.SimChain(c, block_time_s) for c in chain_ids}
    sim = simnet.SimnetServer(operators, chains)
    sim.start()
    accounts = [Account.create() for _ in range(probes)]
    registry_file = tmp_path / "registry.yaml"
    simnet.write_registry(
        registry_file,
        operators,
        chains,
        url_base=sim.url,
        probes=[
            {"address": a.address, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, a in enumerate(accounts)
        ],
    )
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(registry_file))
    return sim, accounts, registry_file


@pytest.fixture
def network(engine: Engine, tmp_path: Path) -> Iterator[Network]:
    """The demo's four operators (healthy, lagging, fork, slow) with a 1 s block time."""
    sim, accounts, registry_file = start_network(engine, tmp_path, simnet.DEMO_OPERATORS)
    try:
        yield Network(sim, accounts, registry_file, simnet.DEMO_CHAIN_ID)
    finally:
        sim.stop()


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, interval_s=1.0, rpc_timeout_s=2.0)


@pytest.fixture
def collector(engine: Engine, settings: Settings) -> Iterator[ServerThread]:
    """The real collector app over loopback HTTP; scoring is driven by the test
    (monitor.scoring.job.run_scoring), so results are deterministic."""
    server = ServerThread(
        create_app(settings, engine=engine, scoring=False), name="collector", lifespan="on"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
