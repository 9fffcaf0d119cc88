"""GET /v1/identity over loopback from a real collector: the registry in force (hash, time,
approving signers and their signatures, the governance it was checked against, the registered
collectors), live after `apply`, unchanged by a refused one, and different between two collectors
that apply different registries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from sqlalchemy import Engine

from monitor.app import create_app
from monitor.db.session import make_engine, session_scope
from monitor.exceptions import GovernanceError
from monitor.registry.apply import apply_registry
from monitor.registry.canonical import registry_hash
from monitor.registry.governance import Governance, load_signatures, sidecar_path
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.signing.governance import registry_approval_typed_data
from tests.conftest import make_settings
from tests.registry.samples import sample
from tests.registry.test_governance import GOVERNANCE, SIGNERS, sign, write

TIMEOUT_S = 10.0
COLLECTOR = {"address": "0xdcB6f58f1CbfF41B9A05A227db84A2CfD800a9C1", "name": "c1", "url": None}


def identity(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/identity", timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def apply(engine: Engine, path: Path, governance: Governance | None = GOVERNANCE) -> None:
    with session_scope(engine) as session:
        apply_registry(
            session,
            registry=load_registry(path),
            governance=governance,
            signatures=load_signatures(sidecar_path(path)),
            source=str(path),
        )


@pytest.fixture
def second_collector(
    sqlite_template: Path, tmp_path: Path
) -> Iterator[tuple[ServerThread, Engine]]:
    """Another collector, its own database and key: another party's."""
    path = tmp_path / "second.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    settings = make_settings(url, service_key_file=tmp_path / "second.key")
    server = ServerThread(
        create_app(settings, engine=engine, scoring=False), name="collector-2", lifespan="on"
    )
    server.start()
    try:
        yield server, engine
    finally:
        server.stop()
        engine.dispose()


def test_identity_shows_the_registry_in_force_and_who_approved_it(
    collector: ServerThread, engine: Engine, tmp_path: Path
) -> None:
    assert identity(collector.url)["registry"] == {
        "hash": None,
        "applied_at": None,
        "signers": [],
        "signatures": [],
        "threshold": None,
        "governance_signers": [],
        "collectors": [],
    }
    doc = sample()
    doc["collectors"] = [{k: v for k, v in COLLECTOR.items() if v is not None}]
    path = write(tmp_path / "registry.yaml", doc)
    sign(path, SIGNERS[1], SIGNERS[0])
    apply(engine, path)  # as `monitor registry apply` would, while the collector runs

    shown = identity(collector.url)
    registry = shown["registry"]
    digest = registry_hash(load_registry(path))
    expected_signers = sorted([SIGNERS[0].address, SIGNERS[1].address], key=str.lower)
    assert registry["hash"] == digest
    assert registry["signers"] == expected_signers
    assert registry["threshold"] == 2
    assert registry["governance_signers"] == [a.address for a in SIGNERS]
    assert registry["collectors"] == [COLLECTOR]
    assert datetime.fromisoformat(registry["applied_at"]).tzinfo is not None
    assert set(shown) == {"address", "eip712", "version", "registry"}
    # Anyone can re-check the signatures with eth-account alone, from the hash shown.
    for entry in registry["signatures"]:
        signable = encode_typed_data(full_message=registry_approval_typed_data(registry["hash"]))
        assert Account.recover_message(signable, signature=entry["signature"]) == entry["signer"]
    assert [s["signer"] for s in registry["signatures"]] == expected_signers

    # A registry without enough approvals is refused: the identity does not move.
    other = sample()
    other["chains"][0]["confirmations"] = 1
    refused = write(tmp_path / "other.yaml", other)
    sign(refused, SIGNERS[2])
    with pytest.raises(GovernanceError):
        apply(engine, refused)
    assert identity(collector.url) == shown


def test_two_collectors_with_different_registries_show_different_hashes(
    collector: ServerThread,
    engine: Engine,
    second_collector: tuple[ServerThread, Engine],
    tmp_path: Path,
) -> None:
    server_2, engine_2 = second_collector
    path = write(tmp_path / "registry.yaml", sample())
    apply(engine, path, governance=None)
    apply(engine_2, path, governance=None)
    first, second = identity(collector.url), identity(server_2.url)
    assert first["address"] != second["address"]
    assert first["registry"]["hash"] == second["registry"]["hash"] is not None

    # The second one's operator adds a probe of their own: visible at once.
    doc = sample()
    doc["probes"].append(
        {"address": "0x640862930728c0d66C06feF36857BbB25476DEb3", "name": "mine", "region": "x"}
    )
    apply(engine_2, write(tmp_path / "mine.yaml", doc), governance=None)
    assert identity(server_2.url)["registry"]["hash"] != identity(collector.url)["registry"]["hash"]
