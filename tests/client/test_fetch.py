"""monitor.client against real collectors over loopback (tests/client/conftest.py): honest
answers are accepted, forged ones are outvoted and named, and too few is a clear failure."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from monitor.client import CombinedWeights, QuorumNotReached, fetch_weights
from monitor.client.combine import CollectorReport
from monitor.client.fetch import MAX_DEPTH
from monitor.exceptions import ConfigError
from monitor.safejson import json_depth
from monitor.serving import ServerThread
from tests.client.conftest import Fleet


def fetch(fleet: Fleet, *collectors: str, **kwargs: Any) -> CombinedWeights:
    return asyncio.run(fetch_weights(collectors, chain_id=fleet.chain_id, **kwargs))


def served(fleet: Fleet) -> dict[int, int]:
    return {w["endpoint_id"]: w["weight_bps"] for w in fleet.answer["weights"]}


def bps(result: CombinedWeights) -> dict[int, int]:
    return {w.endpoint_id: w.weight_bps for w in result.weights}


def report(result: CombinedWeights | tuple[object, ...], url: str) -> CollectorReport:
    reports = result.collectors if isinstance(result, CombinedWeights) else result
    (found,) = [r for r in reports if isinstance(r, CollectorReport) and r.url == url]
    return found


def test_identical_honest_collectors_are_accepted_as_is(fleet: Fleet) -> None:
    for signers in (fleet.signers, None):  # pinned, and each collector's identity believed
        result = fetch(fleet, *fleet.honest, signers=signers)
        assert result.unanimous and result.counted == 3 and result.quorum == 2
        assert (result.as_of_ms, result.window) == (fleet.answer["as_of_ms"], "5m")
        assert bps(result) == served(fleet) and result.total_bps == 10_000
        assert [w.operator_id for w in result.weights] == [
            w["operator_id"] for w in fleet.answer["weights"]
        ]
        assert [(r.status, r.signer) for r in result.collectors] == [
            ("ok", s) for s in fleet.signers
        ]
    # Each signed its own answer with its own key: three signatures, one content.
    signatures = {
        httpx.get(f"{u}/v1/weights", params={"chain_id": fleet.chain_id}, trust_env=False).json()[
            "signature"
        ]
        for u in fleet.honest
    }
    assert len(signatures) == 3


@pytest.mark.parametrize("forger", ["resigned", "tampered"])
def test_forged_weights_are_excluded_and_the_honest_answer_stands(
    fleet: Fleet, forger: str
) -> None:
    url = getattr(fleet, forger)
    a, b, _ = fleet.honest
    for signers in (fleet.signers, None):
        result = fetch(fleet, a, url, b, signers=signers)
        assert bps(result) == served(fleet) and result.unanimous
        forged = report(result, url)
        assert (forged.status, forged.reason) == ("excluded", "unknown_signer")
        assert "altered or signed by another key" in forged.detail


def test_a_rogue_collector_signing_its_own_lies_is_outvoted(fleet: Fleet) -> None:
    a, b, _ = fleet.honest
    # Believed (its /v1/identity announces its key, or it is pinned): counted, and outvoted.
    for signers in (None, [*fleet.signers[:2], fleet.rogue_signer]):
        result = fetch(fleet, a, fleet.rogue, b, signers=signers)
        assert bps(result) == served(fleet) and not result.unanimous
        rogue = report(result, fleet.rogue)
        assert (rogue.status, rogue.signer) == ("disagreed", fleet.rogue_signer)
        charlie = fleet.ids["charlie"]
        assert (charlie, 2_000, 0) in [
            (d.endpoint_id, d.weight_bps, d.combined_bps) for d in rogue.disagreements
        ]
    # Not pinned: not counted at all.
    result = fetch(fleet, a, fleet.rogue, b, signers=fleet.signers)
    assert report(result, fleet.rogue).reason == "unknown_signer"


def test_a_cache_in_front_of_a_collector_does_not_count_twice(fleet: Fleet) -> None:
    a, b, _ = fleet.honest
    result = fetch(fleet, a, fleet.mirror, b, fleet.rogue, quorum=2)
    assert report(result, fleet.mirror).reason == "duplicate_signer"
    assert bps(result) == served(fleet)  # the median of a, b and the rogue: a and b's
    # The mirror would have made a and its copy a majority against the rogue: it does not.
    with pytest.raises(QuorumNotReached, match="0 of 2 valid answers are within"):
        fetch(fleet, a, fleet.mirror, fleet.rogue)
    with pytest.raises(QuorumNotReached, match="1 of 3 collectors gave valid weights"):
        fetch(fleet, a, fleet.mirror, fleet.tampered, signers=fleet.signers)


def test_quorum_fails_when_two_of_three_are_down_or_forged(fleet: Fleet) -> None:
    a = fleet.honest[0]
    started = time.monotonic()
    with pytest.raises(QuorumNotReached, match="1 of 3 collectors gave valid") as caught:
        fetch(fleet, a, fleet.tampered, fleet.silent, signers=fleet.signers, timeout_s=1.0)
    assert time.monotonic() - started < 5  # the silent one costs the timeout, no more
    reports = caught.value.reports
    assert (report(reports, a).status, report(reports, fleet.tampered).reason) == (
        "ok",
        "unknown_signer",
    )
    silent = report(reports, fleet.silent)
    assert (silent.reason, silent.detail) == ("unreachable", "no answer within 1 s")

    with pytest.raises(QuorumNotReached) as caught:
        fetch(fleet, a, fleet.resigned, fleet.refused)
    assert report(caught.value.reports, fleet.refused).reason == "unreachable"

    # Two valid answers that differ: neither vouches for their median.
    with pytest.raises(QuorumNotReached, match="0 of 2 valid answers are within") as caught:
        fetch(fleet, a, fleet.rogue, fleet.refused)
    assert {report(caught.value.reports, u).status for u in (a, fleet.rogue)} == {"disagreed"}


def test_an_honest_collector_with_less_data_is_reported_against_the_median(fleet: Fleet) -> None:
    a, b, _ = fleet.honest
    signers = [*fleet.signers, fleet.partial_signer]
    result = fetch(fleet, a, fleet.partial, b, signers=signers)
    assert bps(result) == served(fleet)
    partial = report(result, fleet.partial)
    assert partial.status == "disagreed" and partial.signer == fleet.partial_signer
    moved = {d.endpoint_id: (d.weight_bps, d.combined_bps) for d in partial.disagreements}
    bravo = fleet.ids["bravo"]
    assert moved[bravo] == (0, served(fleet)[bravo])  # it never heard of bravo's health
    assert [report(result, u).status for u in (a, b)] == ["ok", "ok"]
    # A wide enough tolerance calls it agreement.
    lenient = fetch(fleet, a, fleet.partial, b, tolerance_bps=5_000)
    assert report(lenient, fleet.partial).status == "ok"


def test_collector_errors_are_reasons(fleet: Fleet) -> None:
    a, b, c = fleet.honest
    with pytest.raises(QuorumNotReached) as caught:
        asyncio.run(fetch_weights([a, b, c], chain_id=999))
    for url in (a, b, c):
        rejected = report(caught.value.reports, url)
        assert rejected.reason == "http_error"
        assert rejected.detail.startswith("HTTP 404 unknown_chain: chain 999")


@pytest.mark.parametrize(
    ("collectors", "kwargs", "message"),
    [
        ([], {}, "no collector"),
        (["ftp://x"], {}, "not an http"),
        (["http://127.0.0.1:9", "http://127.0.0.1:9/"], {}, "given twice"),
        (["http://127.0.0.1:9"], {"quorum": 2}, "quorum 2"),
        (["http://127.0.0.1:9"], {"quorum": 0}, "quorum 0"),
        (["http://127.0.0.1:9"], {"signers": ["0x12"]}, "not an address"),
        (["http://127.0.0.1:9", "http://127.0.0.1:8"], {"signers": ["0x" + "11" * 20]}, "pinned"),
        (["http://127.0.0.1:9"], {"timeout_s": 0}, "timeout"),
    ],
)
def test_bad_arguments_are_config_errors(collectors: list[str], kwargs: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        asyncio.run(fetch_weights(collectors, chain_id=1, **kwargs))


def test_hostile_answers_are_malformed_not_a_crash() -> None:
    bodies = {
        "/big": b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}',  # over the 4 MiB cap
        # eth-account raises the recursion limit to 100000: json.loads would overflow the C
        # stack on this and kill the process (a segfault, not an exception).
        "/deep": b"[" * 200_000,
        "/text": b"<html>not json</html>",
        "/list": b"[]",
        "/error": b"[" * 60_000,  # as an error body
    }

    async def answer(request: Request) -> Response:
        prefix = request.url.path.removesuffix("/v1/weights")
        return Response(bodies[prefix], status_code=503 if prefix == "/error" else 200)

    routes = [Route(f"{prefix}/v1/weights", answer) for prefix in bodies]
    with ServerThread(Starlette(routes=routes), name="hostile") as server:
        urls = [f"{server.url}{prefix}" for prefix in bodies]
        with pytest.raises(QuorumNotReached) as caught:
            asyncio.run(fetch_weights(urls, chain_id=1, signers=["0x" + "11" * 20], quorum=1))
    details = [
        (report(caught.value.reports, u).reason, report(caught.value.reports, u).detail)
        for u in urls
    ]
    assert details == [
        ("malformed", "answer larger than 4194304 bytes"),
        ("malformed", "the answer is not JSON nested at most 16 deep"),
        ("malformed", "the answer is not JSON"),
        ("malformed", "the answer is not a JSON object"),
        ("http_error", "HTTP 503 " + "[" * 300),
    ]


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b'{"weights": [{"endpoint": "http://[::1]:8545"}]}', True),
        (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[["}', True),  # brackets in strings do not count
        (b'{"a": "\\\\", "b": "\\"[[[[[[[[[[[[[[[[[[[["}', True),  # nor escaped quotes
        (b"[" * 16 + b"]" * 16, True),
        (b"[" * 17 + b"]" * 17, False),
        # an escaped quote does not end the string: all 40 are in it (json.loads then refuses
        # the unterminated string, without recursing)
        (b'{"a": "x\\"' + b"[" * 40, True),
    ],
)
def test_nesting_is_capped_before_parsing(body: bytes, ok: bool) -> None:
    assert (json_depth(body) <= MAX_DEPTH) is ok
