"""Smoke test for the throwaway PostgreSQL cluster used by the suite."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from .postgres import PostgresCluster

pytestmark = pytest.mark.postgres


def _process_gone(pid: int) -> bool:
    # A reparented postmaster may linger as a zombie where PID 1 does not reap
    # children (containers); a zombie is not a running server.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.startswith("State:") and "Z" in line for line in status.splitlines())


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_cluster_lifecycle() -> None:
    with PostgresCluster() as cluster:
        base_dir, pid, port = cluster.base_dir, cluster.pid, cluster.port
        assert base_dir is not None and base_dir.is_dir()
        assert pid is not None and port is not None and not _process_gone(pid)
        assert cluster.url("x") == f"postgresql+psycopg://postgres@127.0.0.1:{port}/x"

        cluster.create_database("smoke")
        engine = create_engine(cluster.url("smoke"))
        try:
            with engine.connect() as conn:
                assert conn.execute(text("select 1")).scalar_one() == 1
            with engine.begin() as conn:
                conn.execute(text("create table t (id int primary key, name text not null)"))
                conn.execute(
                    text("insert into t (id, name) values (:id, :name)"),
                    [{"id": 1, "name": "a"}, {"id": 2, "name": "ü"}],
                )
            with engine.connect() as conn:
                rows = conn.execute(text("select id, name from t order by id")).all()
            assert [tuple(r) for r in rows] == [(1, "a"), (2, "ü")]

            # A clone via TEMPLATE carries the table over.
            engine.dispose()
            cluster.create_database("smoke_copy", template="smoke")
            copy = create_engine(cluster.url("smoke_copy"))
            with copy.connect() as conn:
                assert conn.execute(text("select count(*) from t")).scalar_one() == 2
            copy.dispose()

            # drop_database must terminate connections that are still open.
            for name in ("smoke_copy", "smoke"):
                lingering = cluster.connect(name)
                try:
                    cluster.drop_database(name)
                finally:
                    lingering.close()
        finally:
            engine.dispose()

        with cluster.connect() as conn:
            names = {r[0] for r in conn.execute("select datname from pg_database")}
        assert "smoke" not in names and "smoke_copy" not in names

    assert cluster.base_dir is None
    assert not base_dir.exists()
    assert _process_gone(pid)
    assert _port_closed(port)


def test_cleanup_when_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), PostgresCluster() as cluster:
        base_dir, pid = cluster.base_dir, cluster.pid
        1 / 0  # noqa: B018
    assert base_dir is not None and not base_dir.exists()
    assert pid is not None and _process_gone(pid)


def test_runs_server_as_postgres_when_root() -> None:
    with PostgresCluster() as cluster:
        assert cluster.data_dir is not None
        owner = cluster.data_dir.stat().st_uid
        if os.geteuid() == 0:
            assert owner != 0
        else:
            assert owner == os.geteuid()
