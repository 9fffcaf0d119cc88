"""The collector's own signatures (signed weights): round trip, tampering, another key, the key
file created on first start, /v1/identity, the signature cache, and the documented script against
a real collector over loopback, as served and as altered on the way."""

from __future__ import annotations

import copy
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from monitor import __version__
from monitor.exceptions import BadSignature, ConfigError
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.collector import (
    ATTESTATION_TYPE_HASH,
    ATTESTATION_TYPES,
    COLLECTOR_DOMAIN,
    SIGNED_TYPES,
    WEIGHTS_TYPE_HASH,
    encode_type,
    published_types,
    recover_signer,
    recover_weights_signer,
    service_account,
    sign_typed,
    sign_weights,
    weights_typed_data,
)
from monitor.signing.eip712 import DOMAIN
from monitor.signing.keys import load_key
from tests.conftest import Network
from tests.signing.test_docs_script import _blocks, _weights_script
from tests.test_api import deliver_rounds

ENTRIES = [(1, "alpha", 6000), (2, "bravo", 4000), (3, "charlie", 0)]
AS_OF_MS = 1_795_000_000_000
TIMEOUT = 10.0


def typed(entries: list[tuple[int, str, int]] = ENTRIES, as_of_ms: int = AS_OF_MS) -> dict:
    return weights_typed_data(chain_id=1, window="5m", as_of_ms=as_of_ms, weights=entries)


def fields(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "chain_id": 1,
        "window": "5m",
        "as_of_ms": AS_OF_MS,
        "weights": ENTRIES,
    }
    return {**base, **changes}


# --- sign / recover -----------------------------------------------------------------------------


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


def test_sign_weights_round_trip() -> None:
    account = Account.create()
    signature = sign_weights(account, **fields())
    assert signature == sign_typed(account, typed())
    assert re.fullmatch(r"0x[0-9a-f]{130}", signature)
    assert int(signature[-2:], 16) in (27, 28)
    assert recover_weights_signer(signature, **fields()) == account.address


@pytest.mark.parametrize(
    "changes",
    [
        {"chain_id": 2},
        {"window": "1h"},
        {"as_of_ms": AS_OF_MS + 1},
        {"weights": [(1, "alpha", 6001), (2, "bravo", 3999), (3, "charlie", 0)]},  # bps moved
        {"weights": [(1, "alpha", 6000), (2, "bravo", 4000), (3, "charlie", 1)]},  # one bps
        {"weights": [(2, "bravo", 4000), (1, "alpha", 6000), (3, "charlie", 0)]},  # reordered
        {"weights": [(1, "alpha", 6000), (2, "bravo", 4000)]},  # an entry dropped
        {"weights": [(1, "mallory", 6000), (2, "bravo", 4000), (3, "charlie", 0)]},  # operator
        {"weights": [(9, "alpha", 6000), (2, "bravo", 4000), (3, "charlie", 0)]},  # endpoint
    ],
)
def test_any_change_recovers_another_address(changes: dict[str, Any]) -> None:
    account = Account.create()
    signature = sign_weights(account, **fields())
    assert recover_weights_signer(signature, **fields(**changes)) != account.address


def test_signature_by_another_key_is_detected() -> None:
    ours, theirs = Account.create(), Account.create()
    forged = sign_weights(theirs, **fields())
    assert recover_weights_signer(forged, **fields()) == theirs.address != ours.address


def test_malformed_and_malleable_signatures_are_refused() -> None:
    signature = sign_weights(Account.create(), **fields())
    raw = bytes.fromhex(signature[2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big")
    twin = "0x" + (raw[:32] + high_s + bytes([55 - raw[64]])).hex()  # same signer, high s
    for bad in ("0x1234", signature[:-2] + "1b1b", twin, "0x" + "00" * 65):
        with pytest.raises(BadSignature):
            recover_weights_signer(bad, **fields())


def test_own_domain_differs_from_the_probes() -> None:
    assert COLLECTOR_DOMAIN != DOMAIN
    account = Account.create()
    probe_domain = {**typed(), "domain": dict(DOMAIN)}
    signature = sign_typed(account, probe_domain)
    assert recover_signer(typed(), signature) != account.address


def test_type_hash_and_encode_type() -> None:
    assert encode_type("Weights", SIGNED_TYPES["Weights"]) == (
        "Weights(uint64 chainId,string window,uint64 asOf,EndpointWeight[] weights)"
        "EndpointWeight(uint64 endpointId,string operatorId,uint16 weightBps)"
    )
    assert WEIGHTS_TYPE_HASH == "0x637a2773ceaba53779c2f675a85016b4e9171b2318acdd0ec6cc62e80fca4688"
    # Referenced types are found transitively and sorted by name (EIP-712 encodeType).
    nested = {
        "A": [{"name": "c", "type": "C[2]"}, {"name": "b", "type": "B"}],
        "B": [{"name": "d", "type": "D"}],
        "C": [{"name": "x", "type": "uint8"}],
        "D": [{"name": "y", "type": "string"}],
    }
    assert encode_type("A", nested) == "A(C[2] c,B b)B(D d)C(uint8 x)D(string y)"


def test_published_types_take_a_second_primary_type() -> None:
    """Why a message is built from its own types only (weights_typed_data, the documented
    script): eth-account refuses a types map with two primary types, which /v1/identity will
    publish once attestations are signed in the same domain."""
    later = {**published_types(), "Attestation": [{"name": "chainId", "type": "uint64"}]}
    with pytest.raises(ValueError, match="primary type"):
        encode_typed_data(full_message={**typed(), "types": later})
    assert set(published_types()) == {"EIP712Domain", *typed()["types"], *ATTESTATION_TYPES}


# --- the key file -------------------------------------------------------------------------------


def test_key_file_is_created_once_with_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys" / "collector.key"
    with caplog.at_level(logging.INFO, logger="monitor.signing"):
        first = service_account(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]  # created, loaded
    assert all(first.address in r.getMessage() for r in caplog.records)
    assert load_key(path).address == first.address  # the probe key format
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monitor.signing"):
        assert service_account(path).address == first.address  # loaded, not replaced
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert first.address in caplog.text


def test_a_file_that_is_not_a_key_is_refused_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "collector.key"
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match="does not hold a key"):
        service_account(path)
    assert path.read_text() == "not a key\n"


def test_the_suite_keeps_the_key_out_of_the_checkout(collector_key: Path) -> None:
    assert Settings().service_key_file == collector_key
    assert Path.cwd() not in collector_key.parents


# --- the API ------------------------------------------------------------------------------------


def get_json(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", params=params, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def test_identity_publishes_the_key_file_address_and_the_documented_layout(
    collector: ServerThread, collector_key: Path
) -> None:
    identity = get_json(collector.url, "/v1/identity")
    assert set(identity) == {"address", "eip712", "version", "registry"}  # tests/identity
    assert identity["address"] == load_key(collector_key).address
    assert identity["version"] == __version__
    assert identity["eip712"] == {
        "domain": {"name": "monitor-collector", "version": "1"},
        "types": published_types(),
        "type_hashes": {"Weights": WEIGHTS_TYPE_HASH, "Attestation": ATTESTATION_TYPE_HASH},
    }
    assert list(identity["eip712"]["types"]) == [
        "EIP712Domain",
        "Weights",
        "EndpointWeight",
        *ATTESTATION_TYPES,
    ]
    # docs/signing.md shows the same answer, but for the address and version.
    (documented,) = [json.loads(b) for b in _blocks("json") if '"monitor-collector"' in b]
    assert documented["eip712"] == identity["eip712"]


def weights_of(url: str, network: Network) -> dict[str, Any]:
    body: dict[str, Any] = get_json(url, "/v1/weights", chain_id=network.chain_id)
    return body


def entries(body: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(w["endpoint_id"], w["operator_id"], w["weight_bps"]) for w in body["weights"]]


def recover_response(body: dict[str, Any]) -> str:
    return recover_weights_signer(
        body["signature"],
        chain_id=body["chain_id"],
        window=body["window"],
        as_of_ms=body["as_of_ms"],
        weights=entries(body),
    )


def test_weights_are_signed_cached_per_run_and_resigned_for_a_new_run(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings)
    identity = get_json(collector.url, "/v1/identity")
    first = weights_of(collector.url, network)
    assert first["signer"] == identity["address"]
    assert recover_response(first) == identity["address"]
    assert first["total_bps"] == 10_000 and len(first["weights"]) == 5
    assert [w["endpoint_id"] for w in first["weights"]] == sorted(
        w["endpoint_id"] for w in first["weights"]
    )
    assert re.fullmatch(r"0x[0-9a-f]{130}", first["signature"])

    # Signed once per run: a second request is served from the cache, and an answer rebuilt
    # (the answer cache cleared) takes the signature from the cache (a planted value shows).
    cache: dict[tuple[object, ...], str] = collector.app.state.weights_signatures
    assert len(cache) == 1
    assert weights_of(collector.url, network)["signature"] == first["signature"]
    assert len(cache) == 1
    ((key, signature),) = cache.items()
    cache[key] = "0x" + "ee" * 65
    collector.app.state.answers.clear()
    assert weights_of(collector.url, network)["signature"] == "0x" + "ee" * 65
    cache[key] = signature
    collector.app.state.answers.clear()
    assert weights_of(collector.url, network) == first

    # A new run is a new message, hence a new signature (and a second cache entry).
    run_scoring(engine, settings)
    newer = weights_of(collector.url, network)
    assert newer["as_of_ms"] > first["as_of_ms"]
    assert newer["signature"] != first["signature"]
    assert recover_response(newer) == identity["address"]
    assert len(cache) == 2

    # Another computed window is signed as such (the window is in the message).
    hourly = get_json(collector.url, "/v1/weights", chain_id=network.chain_id, window="1h")
    assert hourly["window"] == "1h" and recover_response(hourly) == identity["address"]


def test_replicas_with_the_same_key_serve_the_same_signature(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    """Deterministic signatures (RFC 6979): a second collector on the same database and key."""
    from monitor.app import create_app

    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings)
    with ServerThread(create_app(settings, engine=engine, scoring=False), name="replica") as r:
        assert weights_of(r.url, network) == weights_of(collector.url, network)


# --- the documented script, over loopback -------------------------------------------------------


@pytest.fixture
def signed_collector(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> ServerThread:
    """The collector with stored scores for the network's chain."""
    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings)
    return collector


def run_script(tmp_path: Path, url: str, chain_id: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "verify_weights.py"
    script.write_text(_weights_script())
    return subprocess.run(
        [sys.executable, str(script), url, str(chain_id), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def man_in_the_middle(signed_collector: ServerThread) -> Iterator[dict[str, Any]]:
    """A loopback server answering ``/v1/identity`` and ``/v1/weights`` with what the real
    collector answered, as altered by the test in the returned dict (``url``, ``identity``,
    ``weights``): what a proxy, CDN or load balancer on the way could do."""
    url = signed_collector.url
    served: dict[str, Any] = {"identity": get_json(url, "/v1/identity")}

    async def identity(_: Request) -> JSONResponse:
        return JSONResponse(served["identity"])

    async def weights(request: Request) -> JSONResponse:
        if "weights" not in served:
            served["weights"] = get_json(url, "/v1/weights", **request.query_params)
        return JSONResponse(served["weights"])

    app = Starlette(routes=[Route("/v1/identity", identity), Route("/v1/weights", weights)])
    with ServerThread(app, name="man-in-the-middle") as server:
        served["url"] = server.url
        yield served


def test_documented_script_accepts_real_weights(
    signed_collector: ServerThread, network: Network, tmp_path: Path
) -> None:
    identity = get_json(signed_collector.url, "/v1/identity")
    ok = run_script(tmp_path, signed_collector.url, network.chain_id)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stderr
    assert identity["address"] in ok.stdout
    pinned = run_script(tmp_path, signed_collector.url, network.chain_id, identity["address"])
    assert pinned.returncode == 0, pinned.stderr
    impostor = run_script(
        tmp_path, signed_collector.url, network.chain_id, Account.create().address
    )
    assert impostor.returncode != 0 and "BAD: weights signed by" in impostor.stderr


def test_documented_script_refuses_a_tampered_weight(
    man_in_the_middle: dict[str, Any],
    signed_collector: ServerThread,
    network: Network,
    tmp_path: Path,
) -> None:
    real = weights_of(signed_collector.url, network)
    untouched = run_script(tmp_path, man_in_the_middle["url"], network.chain_id)
    assert untouched.returncode == 0, untouched.stderr  # the relay itself changes nothing

    tampered = copy.deepcopy(real)
    top = max(tampered["weights"], key=lambda w: w["weight_bps"])
    top["weight_bps"] -= 1
    man_in_the_middle["weights"] = tampered
    bad = run_script(tmp_path, man_in_the_middle["url"], network.chain_id)
    assert bad.returncode != 0 and "BAD: weights signed by" in bad.stderr, bad.stdout
    pinned = run_script(tmp_path, man_in_the_middle["url"], network.chain_id, real["signer"])
    assert pinned.returncode != 0 and "BAD: weights signed by" in pinned.stderr


def test_documented_script_refuses_weights_re_signed_by_another_key(
    man_in_the_middle: dict[str, Any],
    signed_collector: ServerThread,
    network: Network,
    tmp_path: Path,
) -> None:
    """An attacker who re-signs altered weights with their own key and also serves their own
    identity passes an unpinned check, never a pinned one: pinning is what protects."""
    real = weights_of(signed_collector.url, network)
    mallory = Account.create()
    forged = copy.deepcopy(real)
    forged["weights"][0]["weight_bps"], forged["weights"][1]["weight_bps"] = (
        forged["weights"][1]["weight_bps"],
        forged["weights"][0]["weight_bps"],
    )
    forged["signer"] = mallory.address
    forged["signature"] = sign_weights(
        mallory,
        chain_id=forged["chain_id"],
        window=forged["window"],
        as_of_ms=forged["as_of_ms"],
        weights=entries(forged),
    )
    man_in_the_middle["weights"] = forged
    man_in_the_middle["identity"] = {**man_in_the_middle["identity"], "address": mallory.address}
    assert run_script(tmp_path, man_in_the_middle["url"], network.chain_id).returncode == 0
    pinned = run_script(tmp_path, man_in_the_middle["url"], network.chain_id, real["signer"])
    assert pinned.returncode != 0 and f"signed by {mallory.address}" in pinned.stderr


def test_documented_script_survives_a_later_primary_type(
    man_in_the_middle: dict[str, Any], network: Network, tmp_path: Path
) -> None:
    """/v1/identity will list attestation types too (issue 5); the script must keep working."""
    identity = copy.deepcopy(man_in_the_middle["identity"])
    identity["eip712"]["types"]["Attestation"] = [{"name": "chainId", "type": "uint64"}]
    man_in_the_middle["identity"] = identity
    ok = run_script(tmp_path, man_in_the_middle["url"], network.chain_id)
    assert ok.returncode == 0, ok.stderr
