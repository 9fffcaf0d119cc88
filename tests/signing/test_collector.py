"""The collector's own signatures (signed weights): round trip, tampering, another key, the key
file created on first start, and the documented script against a real collector."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from sqlalchemy import Engine

from monitor.exceptions import BadSignature
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.collector import (
    COLLECTOR_DOMAIN,
    recover_signer,
    service_account,
    sign_typed,
    weights_typed_data,
)
from monitor.signing.eip712 import DOMAIN
from tests.conftest import Network
from tests.signing.test_docs_script import _weights_script
from tests.test_api import deliver_rounds

ENTRIES = [(1, "alpha", 6000), (2, "bravo", 4000), (3, "charlie", 0)]


def typed(entries: list[tuple[int, str, int]] = ENTRIES, as_of_ms: int = 1_795_000_000_000) -> dict:
    return weights_typed_data(chain_id=1, window="5m", as_of_ms=as_of_ms, weights=entries)


def test_round_trip_and_tampering() -> None:
    account = Account.create()
    signature = sign_typed(account, typed())
    assert recover_signer(typed(), signature) == account.address
    assert sign_typed(account, typed()) == signature  # deterministic (RFC 6979)
    moved = [(1, "alpha", 5999), (2, "bravo", 4001), (3, "charlie", 0)]
    for tampered in (typed(moved), typed(as_of_ms=1), typed(ENTRIES[::-1])):
        assert recover_signer(tampered, signature) != account.address
    assert recover_signer(typed(), sign_typed(Account.create(), typed())) != account.address
    with pytest.raises(BadSignature):
        recover_signer(typed(), "0x1234")


def test_own_domain_differs_from_the_probes() -> None:
    assert COLLECTOR_DOMAIN != DOMAIN


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "collector.key"
    first = service_account(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert service_account(path).address == first.address  # loaded, not replaced


def test_weights_are_signed_and_the_documented_script_checks_them(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings)
    identity = httpx.get(f"{collector.url}/v1/identity").json()
    weights = httpx.get(f"{collector.url}/v1/weights", params={"chain_id": network.chain_id}).json()
    assert weights["signer"] == identity["address"]
    assert identity["eip712"]["domain"] == COLLECTOR_DOMAIN
    again = httpx.get(f"{collector.url}/v1/weights", params={"chain_id": network.chain_id}).json()
    assert again["signature"] == weights["signature"]  # one signature per run, cached

    script = tmp_path / "verify_weights.py"
    script.write_text(_weights_script())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), collector.url, str(network.chain_id), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = run()
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stderr
    pinned = run(identity["address"])
    assert pinned.returncode == 0, pinned.stderr
    impostor = run(Account.create().address)
    assert impostor.returncode != 0 and "BAD: weights signed by" in impostor.stderr

    # A new run is a new message, hence a new signature.
    run_scoring(engine, settings)
    newer = httpx.get(f"{collector.url}/v1/weights", params={"chain_id": network.chain_id}).json()
    assert newer["as_of_ms"] != weights["as_of_ms"]
    assert newer["signature"] != weights["signature"]
