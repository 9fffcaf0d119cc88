"""Databases for the dashboard's SQL: a pipeline run and a realistic volume, each with the
read-only role of dashboards/grafana_readonly.sql, and connections as that role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from monitor.db.session import make_engine
from tests.conftest import TEMPLATE_DB
from tests.dashboards.dashboard import READONLY_SQL
from tests.dashboards.seed import VOLUME_SQL, Seeded, seed_pipeline
from tests.support.postgres import HOST, PostgresCluster

ROLE = "monitor_grafana"
SESSION_TIME_ZONE = "Asia/Kolkata"


@dataclass(frozen=True)
class Database:
    cluster: PostgresCluster
    name: str

    def connect(self) -> psycopg.Connection:
        """As Grafana: the read-only role, in a session time zone with a half-hour offset (the
        server's zone is the host's, not necessarily UTC, and no query may depend on it);
        autocommit, so one refused statement does not spoil the next."""
        return psycopg.connect(
            host=HOST,
            port=self.cluster.port,
            user=ROLE,
            dbname=self.name,
            autocommit=True,
            options=f"-c TimeZone={SESSION_TIME_ZONE}",
        )


def apply_readonly_role(cluster: PostgresCluster, name: str) -> None:
    with cluster.connect(name) as conn:  # as the superuser, in one transaction
        conn.execute(READONLY_SQL.read_bytes())


@pytest.fixture(scope="package")
def pipeline_db(
    pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, Seeded]]:
    name = "dashboards_pipeline"
    pg_cluster.create_database(name, template=TEMPLATE_DB)
    engine = make_engine(pg_cluster.url(name))
    try:
        seeded = seed_pipeline(engine, pg_cluster.url(name), Path(tmp_path_factory.mktemp("dash")))
        engine.dispose()
        apply_readonly_role(pg_cluster, name)
        yield Database(pg_cluster, name), seeded
    finally:
        engine.dispose()
        pg_cluster.drop_database(name)


@pytest.fixture(scope="package")
def volume_db(pg_cluster: PostgresCluster) -> Iterator[Database]:
    name = "dashboards_volume"
    pg_cluster.create_database(name, template=TEMPLATE_DB)
    try:
        with pg_cluster.connect(name) as conn:
            conn.execute(VOLUME_SQL.encode())
        with pg_cluster.connect(name, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # what autovacuum does to a live database
        apply_readonly_role(pg_cluster, name)
        yield Database(pg_cluster, name)
    finally:
        pg_cluster.drop_database(name)
