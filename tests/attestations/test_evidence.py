"""evaluate_evidence on the hand-computed fixture (tests/attestations/support.py): figures,
minute verdicts, the quorum-less minute, the late batch, and what cannot count as evidence. Then
the same batches through ingest and the rollups: the SLA API's figures equal the attested ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import Engine

from monitor.attestations.evidence import Evidence, evaluate_evidence
from monitor.attestations.merkle import hex_root
from monitor.attestations.message import figures_struct, verdicts_struct
from monitor.db.session import session_scope
from monitor.exceptions import InvalidEvidence
from monitor.ingest.service import batch_hash, ingest_batch
from monitor.signing.eip712 import sign_batch
from monitor.sla.rollup import roll_up
from monitor.sla.service import period_figures
from tests.attestations.support import (
    BEFORE_LATE,
    CHAIN,
    FINAL,
    TARGETS,
    VERDICTS,
    Fleet,
    check,
    fake_fleet,
    make_fleet,
    ms,
    scenario,
    sign,
)

START = datetime(2026, 11, 2, 10, 37, tzinfo=UTC)
END = START + timedelta(minutes=6)
CREATED = END + timedelta(minutes=5)


def evaluate(fleet: Fleet, bodies: list[str], **overrides: Any) -> Evidence:
    kwargs: dict[str, Any] = {
        "operator_id": "alpha",
        "chain_id": CHAIN,
        "start": START,
        "end": END,
        "targets": TARGETS,
        "probes": [a.address for a in fleet.probes],
        **overrides,
    }
    return evaluate_evidence(bodies, **kwargs)


def struct(evidence: Evidence) -> dict[str, Any]:
    return figures_struct(
        evidence.figures, longest_outage_minutes=evidence.longest_outage_minutes
    ).model_dump()


def test_hand_computed_period_with_the_late_batch() -> None:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=CREATED)
    evidence = evaluate(fleet, [*bodies, late])
    assert struct(evidence) == FINAL
    assert verdicts_struct(evidence.figures.verdicts).model_dump() == VERDICTS
    states = {m: (v.state, v.reasons, v.probes) for m, v in evidence.minutes.items()}
    assert states == {
        0: ("up", (), 3),
        1: ("down", ("unavailable",), 3),
        2: ("down", ("unavailable",), 2),
        3: ("insufficient", (), 1),  # one probe: no quorum, not in the denominator
        4: ("down", ("lagging",), 3),
        5: ("up", (), 3),  # one probe of three saw a wrong hash: not raised
    }
    assert list(evidence.probes) == sorted((a.address for a in fleet.probes), key=str.lower)
    hashes = sorted(batch_hash(b.encode()) for b in [*bodies, late])
    assert list(evidence.batch_hashes) == hashes
    assert evidence.root == hex_root(hashes)
    assert evidence.idle_batches == ()


def test_before_the_late_batch_the_minute_has_no_quorum() -> None:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=CREATED)
    evidence = evaluate(fleet, bodies)
    assert struct(evidence) == BEFORE_LATE
    assert evidence.minutes[2].state == "insufficient"
    # Arrival order does not matter: the late batch counts at its observation times.
    assert struct(evaluate(fleet, [late, *reversed(bodies)])) == FINAL


def test_the_next_minute_is_the_next_period() -> None:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=CREATED)
    evidence = evaluate(fleet, [bodies[0], late], start=END, end=END + timedelta(minutes=1))
    f = struct(evidence)
    assert (f["totalMinutes"], f["down"], f["downUnavailable"], f["probeCount"]) == (1, 1, 1, 2)
    assert (f["availabilityPpm"], f["correctnessPpm"], f["latencyP95Ms"]) == (0, -1, -1)
    assert evidence.figures.verdicts["correctness"] == "insufficient_data"


def test_a_body_given_twice_counts_once() -> None:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=CREATED)
    assert struct(evaluate(fleet, [*bodies, late, late, bodies[0]])) == FINAL


def test_a_batch_without_the_subject_is_idle() -> None:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=CREATED)
    other = sign(fleet.probes[2], [check(fleet, "bravo", ms(START) + 5_000)], created=CREATED)
    evidence = evaluate(fleet, [*bodies, late, other])
    assert evidence.idle_batches == (batch_hash(other.encode()),)
    assert struct(evidence) == FINAL


def test_what_cannot_be_evidence() -> None:
    fleet = fake_fleet()
    bodies, _ = scenario(fleet, START, created=CREATED)
    stranger = Account.create()
    forged = sign(stranger, [check(fleet, "alpha", ms(START) + 5_000)], created=CREATED)
    with pytest.raises(InvalidEvidence, match="not by a known probe"):
        evaluate(fleet, [*bodies, forged])
    tampered = bodies[0].replace('"latency_us":20000', '"latency_us":20001', 1)
    assert tampered != bodies[0]
    with pytest.raises(InvalidEvidence, match="does not match the results"):
        evaluate(fleet, [tampered])
    with pytest.raises(InvalidEvidence, match=batch_hash(b"{}")):
        evaluate(fleet, ["{}"])
    # The same batch id of one probe twice, with other results: a batch counts once.
    account = fleet.probes[0]
    twice = [
        sign_batch(
            account,
            [check(fleet, "alpha", ms(START) + n)],
            batch_id="ab" * 16,
            created_at_ms=ms(CREATED),
        ).model_dump_json()
        for n in (1_000, 2_000)
    ]
    with pytest.raises(InvalidEvidence, match="counts once"):
        evaluate(fleet, twice)


def test_the_period_is_whole_aware_minutes() -> None:
    fleet = fake_fleet()
    for start, end in [
        (START + timedelta(seconds=1), END),
        (START, START),
        (END, START),
    ]:
        with pytest.raises(ValueError):
            evaluate(fleet, [], start=start, end=end)
    with pytest.raises(ValueError, match="naive"):
        evaluate(fleet, [], start=START.replace(tzinfo=None))


def test_rollups_reach_the_attested_figures(engine: Engine) -> None:
    """The same batches ingested and rolled up: the SLA API's figures (monitor.sla) equal the
    ones recomputed from the raw evidence."""
    fleet = make_fleet(engine)
    bodies, late = scenario(fleet, START, created=CREATED)
    for body in [*bodies, late]:
        with session_scope(engine) as session:
            ingest_batch(
                session,
                body=body.encode(),
                now=CREATED + timedelta(seconds=2),
                clock_skew=timedelta(seconds=60),
                max_results=1000,
            )
    with session_scope(engine) as session:
        while roll_up(session).batches:
            pass
    with session_scope(engine) as session:
        figures, outage = period_figures(
            session, chain_id=CHAIN, operator_id="alpha", start=START, end=END, targets=TARGETS
        )
    assert figures_struct(figures, longest_outage_minutes=outage).model_dump() == FINAL
