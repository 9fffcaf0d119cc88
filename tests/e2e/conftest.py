"""Fixtures the multi-process tests share: a fresh PostgreSQL database of their own, and a group
of ``monitor`` processes stopped at the end (their logs shown when a test fails)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEMPLATE_DB
from tests.e2e.test_processes import Processes
from tests.support.postgres import PostgresCluster

_names = itertools.count()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A migrated, empty database on the suite's PostgreSQL cluster, for processes to share."""
    name = f"e2e_{os.getpid()}_{next(_names)}"
    pg_cluster.create_database(name, template=TEMPLATE_DB)
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """``monitor`` processes run from ``tmp_path``, with no MONITOR_ setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    processes = Processes(tmp_path, env)
    try:
        yield processes
    finally:
        processes.stop_all()
        print(processes.logs())  # shown by pytest when the test failed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (``make test``) the multi-process tests run one
    after another on one worker, beside the rest of the suite on the other, never two of them
    at once: each starts a dozen processes whose timing it judges."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("e2e"))
