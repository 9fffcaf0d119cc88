"""Alembic migrations, on SQLite and PostgreSQL: they match the models (no drift), build a fresh
database up to head, and the collector refuses a database that is not at head."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from monitor.db.migrate import alembic_config, check, require_head, upgrade
from monitor.db.models import Base
from monitor.db.session import make_engine
from monitor.exceptions import ConfigError
from tests.support.postgres import PostgresCluster

_names = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "empty.db").touch()  # an empty file is an empty SQLite database
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"migrations_{next(_names)}"
    cluster.create_database(name)
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    """``alembic check``: autogenerate against the migrated database finds nothing to add."""
    check(database_url)


def test_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(ConfigError) as info:
        require_head(f"sqlite:///{path}")
    assert "run `monitor db upgrade`" in info.value.message
    assert not path.exists()


def test_empty_database_is_refused(empty_database_url: str) -> None:
    with pytest.raises(ConfigError) as info:
        require_head(empty_database_url)
    message = info.value.message
    assert "nothing" in message
    assert head_revision(empty_database_url) in message
    assert "run `monitor db upgrade`" in message


def test_fresh_database_upgrades_to_head(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    require_head(empty_database_url)
    assert table_names(empty_database_url) == set(Base.metadata.tables) | {"alembic_version"}
    check(empty_database_url)
    upgrade(empty_database_url)  # at head already: a no-op, not an error
    require_head(empty_database_url)


def test_database_behind_head_is_refused(empty_database_url: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(empty_database_url))
    revisions = list(script.walk_revisions())
    if len(revisions) < 2:
        pytest.skip("a single migration: no revision between nothing and head")
    behind = revisions[1].revision  # walk_revisions goes from head down
    upgrade(empty_database_url, behind)
    with pytest.raises(ConfigError, match=f"at {behind}, not {head_revision(empty_database_url)}"):
        require_head(empty_database_url)


def test_cli_db_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    monitor = Path(sys.executable).with_name("monitor")
    command = [str(monitor)] if monitor.exists() else [sys.executable, "-m", "monitor.cli"]
    for _ in range(2):  # the second run finds the schema at head and does nothing
        proc = subprocess.run(
            [*command, "db", "upgrade", "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"database at head: {url}" in proc.stdout
    require_head(url)
    assert table_names(url) == set(Base.metadata.tables) | {"alembic_version"}
    assert not (tmp_path / "monitor.db").exists()  # the flag, not the default URL, was used


def test_batches_stored_before_0004_get_their_hash(empty_database_url: str) -> None:
    """0004 names every stored batch by keccak256 of its body, then makes the name required."""
    from eth_utils import keccak
    from sqlalchemy import text

    upgrade(empty_database_url, "0003")
    engine = make_engine(empty_database_url)
    body = '{"message": {"batchId": "old"}, "results": [], "signature": "0x"}'
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO probes (id, address, name, region, active, updated_at) VALUES "
                    "(1, '0x' || :a, 'p', 'r', true, '2026-01-01 00:00:00')"
                ),
                {"a": "11" * 20},
            )
            connection.execute(
                text(
                    "INSERT INTO batches (id, probe_id, batch_id, created_at, received_at, "
                    "results_hash, signature, result_count, body) VALUES (1, 1, 'old', "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:01', '0x', '0x', 0, :body)"
                ),
                {"body": body},
            )
        upgrade(empty_database_url)
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT body_hash, rolled_up FROM batches")).one()
        assert stored[0] == "0x" + keccak(body.encode()).hex()
        assert not stored[1]  # rolled up by the next rollup run
    finally:
        engine.dispose()
