"""Fuzz the collector's API from its own OpenAPI schema (schemathesis), over real loopback HTTP,
on SQLite and on PostgreSQL.

Every operation of ``/openapi.json`` gets schema-conforming (positive) and schema-violating
(negative) requests. Whatever arrives, the collector must answer without a 5xx, every 4xx must
carry the error shape ``{"error": {"code": str, "message": str}}``, and a refused request must
store nothing (row counts of every table unchanged). The fuzzer cannot forge signatures, so it
tests that garbage is refused cleanly, not that good batches are accepted (tests/ingest does).

``POST /v1/batches`` reads its body itself (size cap while streaming) and ``GET /v1/targets``
reads its authentication headers itself; monitor/openapi.py declares both in the schema, so the
fuzzer sends batch-shaped bodies and probe-shaped headers instead of nothing (asserted below).

The chain and operators of the demo registry exist and are scored once, so the fuzzer also hits
the paths that find something (``/v1/scores?chain_id=1337``, ``/v1/operators/alpha``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import Engine, select

from monitor import simnet
from monitor.db.models import Endpoint
from monitor.db.session import session_scope
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.canonical import results_hash
from monitor.signing.eip712 import typed_data
from tests.conftest import Network, row_counts

# Examples per operation, drawn from all its strategies (positive, negative, aimed at what
# exists); POST /v1/batches gets three times as many. With the SLA and attestation operations,
# about 17 s per database.
EXAMPLES = 40
TIMEOUT_S = 10.0
BATCHES = ("POST", "/v1/batches")
# Operators of the demo registry, and a chain id the collector knows, for the strategies that
# should find something rather than only 404s.
KNOWN_OPERATORS = [o.operator_id for o in simnet.DEMO_OPERATORS]
KNOWN_CHAIN = simnet.DEMO_CHAIN_ID

FUZZ_SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,  # no example database: nothing replayed from earlier runs, nothing written
    deadline=None,  # latency is not what this tests; PostgreSQL under load is slower
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: report as is
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign_message(account: LocalAccount, message: dict[str, Any]) -> str:
    """The EIP-712 signature of a batch message, made with eth-account alone."""
    signed = account.sign_message(encode_typed_data(full_message=typed_data(message)))
    return "0x" + bytes(signed.signature).hex()


@dataclass
class Known:
    """What exists in the collector's database, for strategies that should get further than the
    first check: the registered probes' keys and the (endpoint, operator, chain) triples."""

    probes: list[LocalAccount]
    endpoints: list[tuple[int, str, int]]


def commitment(results: list[dict[str, Any]]) -> dict[str, Any]:
    """resultsHash and resultCount for these results; none when they cannot be hashed (the JSON
    schema lets an integer be 1.0, which the canonical encoding refuses, as the collector does:
    such a batch keeps its random hash and is refused as malformed)."""
    try:
        return {"resultsHash": results_hash(results), "resultCount": len(results)}
    except (TypeError, ValueError):
        return {}


def hashed_batches(operation: Any) -> st.SearchStrategy[Any]:
    """Schema-conforming batches whose resultsHash and resultCount match their results: they get
    past the commitment checks to the signature, which is random, so refused (401)."""

    def commit(case: Any) -> Any:
        case.body["message"].update(commitment(case.body["results"]))
        return case

    return operation.as_strategy(generation_mode=GenerationMode.POSITIVE).map(commit)


def signed_batches(operation: Any, known: Known) -> st.SearchStrategy[Any]:
    """Schema-conforming batches, committed and signed by a registered probe, created up to 2 h
    ago or 2 min ahead, their results often naming real endpoints: they get past the signature
    to the endpoint, clock and consistency checks, and some are stored (what a probe may send
    is what the fuzzer finds, including extreme integers and empty batches)."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        case = draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        account = draw(st.sampled_from(known.probes))
        created = now_ms() - draw(st.integers(-120_000, 7_200_000))
        for result in case.body["results"]:
            if draw(st.booleans()):
                endpoint_id, operator_id, chain_id = draw(st.sampled_from(known.endpoints))
                result.update(endpoint_id=endpoint_id, operator_id=operator_id, chain_id=chain_id)
            if draw(st.booleans()):
                result["observed_at_ms"] = created - draw(st.integers(-3_000, 3_700_000))
        message = case.body["message"]
        message.update(
            probe=account.address,
            createdAt=created,
            **commitment(case.body["results"]),
        )
        case.body["signature"] = sign_message(account, message)
        return case

    return build()


def strategy_for(operation: Any, known: Known) -> st.SearchStrategy[Any]:
    """Positive and negative cases of one operation, plus positive ones aimed at what exists."""
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    names = {(p.location, p.name) for p in operation.iter_parameters()}
    if ("query", "chain_id") in names:
        strategies.append(
            operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, query={"chain_id": KNOWN_CHAIN}
            )
        )
    if ("path", "operator_id") in names:
        strategies.extend(
            operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters={"operator_id": o}
            )
            for o in KNOWN_OPERATORS
        )
    if (operation.method.upper(), operation.path) == BATCHES:
        strategies += [hashed_batches(operation), signed_batches(operation, known)]
    return st.one_of(strategies)


def answer_label(response: schemathesis.Response) -> str:
    """``200``, or ``422 malformed_batch``: the status and the error code when there is one."""
    try:
        return f"{response.status_code} {json.loads(response.content)['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


def check_answer(key: tuple[str, str], response: schemathesis.Response) -> None:
    status = response.status_code
    where = f"{key[0]} {key[1]} -> {status} {response.content[:500]!r}"
    assert status < 500, f"server error: {where}"
    if key == BATCHES and status < 400:
        # Only a batch signed by a registered probe can be accepted (signed_batches).
        assert status == 200, where
        ack = json.loads(response.content)
        assert set(ack) == {"batch_id", "probe", "results", "duplicate"}, where
    if 400 <= status < 500:
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
        assert content_type and content_type[0].startswith("application/json"), where
        body = json.loads(response.content)
        assert isinstance(body, dict) and set(body) == {"error"}, where
        error = body["error"]
        assert isinstance(error, dict), where
        assert isinstance(error.get("code"), str) and error["code"], where
        assert isinstance(error.get("message"), str) and error["message"], where


def fuzz_operation(
    operation: Any, url: str, engine: Engine, session: requests.Session, known: Known
) -> Counter[str]:
    """Run the fuzzer on one operation; how many answers it got of each status and code."""
    key = (operation.method.upper(), operation.path)
    seen: Counter[str] = Counter()

    # The batch endpoint is where the collector writes: three times the examples.
    @hypothesis.settings(FUZZ_SETTINGS, max_examples=EXAMPLES * (3 if key == BATCHES else 1))
    @hypothesis.given(case=strategy_for(operation, known))
    def fuzz(case: Any) -> None:
        before = row_counts(engine)
        response = case.call(base_url=url, session=session, timeout=TIMEOUT_S)
        check_answer(key, response)
        seen[answer_label(response)] += 1
        if response.status_code != 200 or key[0] == "GET":
            after = row_counts(engine)
            changed = {t: (before[t], after[t]) for t in before if before[t] != after[t]}
            assert not changed, f"{key[0]} {key[1]} -> {response.status_code} wrote rows: {changed}"

    fuzz()
    return seen


@pytest.fixture
def scored(network: Network, engine: Engine, settings: Settings) -> Network:
    """The demo registry applied and one scoring run made, so the read endpoints have answers
    (no ``scores_not_ready`` 503 for the known chain)."""
    run_scoring(engine, settings)
    return network


def test_fuzz_api_from_its_openapi_schema(
    collector: ServerThread, engine: Engine, scored: Network
) -> None:
    raw = httpx.get(f"{collector.url}/openapi.json", timeout=TIMEOUT_S).json()
    assert "requestBody" in raw["paths"][BATCHES[1]]["post"]
    assert len(raw["paths"]["/v1/targets"]["get"]["parameters"]) == 3
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    keys = {(op.method.upper(), op.path) for op in operations}
    assert BATCHES in keys and ("GET", "/v1/weights") in keys, keys

    with session_scope(engine) as db:
        endpoints = [
            tuple(row)
            for row in db.execute(select(Endpoint.id, Endpoint.operator_id, Endpoint.chain_id))
        ]
    known = Known(probes=scored.probes, endpoints=endpoints)  # type: ignore[arg-type]

    failures: dict[str, str] = {}
    counts: dict[str, Counter[str]] = {}
    started = time.monotonic()
    with requests.Session() as session:
        for operation in operations:
            name = f"{operation.method.upper()} {operation.path}"
            try:
                counts[name] = fuzz_operation(operation, collector.url, engine, session, known)
            except Exception as exc:  # report every operation, not only the first to fail
                failures[name] = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    total = sum(sum(c.values()) for c in counts.values())
    print(f"fuzzed {total} requests in {elapsed:.1f} s")
    for name, seen in counts.items():
        print(f"  {name}: {dict(seen.most_common())}")
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert all(sum(c.values()) > 0 for c in counts.values()), counts
