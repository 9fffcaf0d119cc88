"""The penalty policy: first and repeated offences, outages, the cap, the policy's hash."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from monitor.sla.penalties import Penalty, PenaltyPolicy, policy_hash, recommend

MET = {"availability": "met", "latency_p95": "met", "lag": "met", "correctness": "met"}


def test_no_violation_no_penalty() -> None:
    r = recommend(verdicts=MET, longest_outage_minutes=0, previous=set(), policy=PenaltyPolicy())
    assert r.violations == () and r.penalty_bps == 0


def test_first_and_repeated_offences() -> None:
    verdicts = {**MET, "availability": "breached", "correctness": "breached"}
    policy = PenaltyPolicy()
    first = recommend(verdicts=verdicts, longest_outage_minutes=0, previous=set(), policy=policy)
    assert [(v.kind, v.repeated, v.penalty_bps) for v in first.violations] == [
        ("availability", False, 100),
        ("invalid_data", False, 500),
    ]
    again = recommend(
        verdicts=verdicts, longest_outage_minutes=0, previous={"invalid_data"}, policy=policy
    )
    assert [(v.kind, v.repeated, v.penalty_bps) for v in again.violations] == [
        ("availability", False, 100),
        ("invalid_data", True, 2000),
    ]
    assert again.penalty_bps == 2100


def test_an_outage_is_a_run_of_down_minutes_and_the_total_is_capped() -> None:
    policy = PenaltyPolicy(
        outage_minutes=10,
        violations={
            "outage": Penalty(first=9000, repeat=9000),
            "latency": Penalty(first=5000, repeat=5000),
        },
    )
    verdicts = {**MET, "latency_p95": "breached", "availability": "breached"}
    short = recommend(verdicts=verdicts, longest_outage_minutes=9, previous=set(), policy=policy)
    assert [v.kind for v in short.violations] == ["latency"]  # availability not in this table
    long = recommend(verdicts=verdicts, longest_outage_minutes=10, previous=set(), policy=policy)
    assert [v.kind for v in long.violations] == ["latency", "outage"]
    assert long.penalty_bps == 10_000


def test_insufficient_data_is_not_a_violation() -> None:
    verdicts = dict.fromkeys(MET, "insufficient_data")
    r = recommend(
        verdicts=verdicts, longest_outage_minutes=0, previous=set(), policy=PenaltyPolicy()
    )
    assert r.violations == ()


def test_the_hash_identifies_the_policy() -> None:
    assert policy_hash(PenaltyPolicy()) == policy_hash(PenaltyPolicy.model_validate({}))
    assert policy_hash(PenaltyPolicy()) != policy_hash(PenaltyPolicy(lookback_days=30))
    assert policy_hash(PenaltyPolicy()).startswith("0x") and len(policy_hash(PenaltyPolicy())) == 66


def test_unknown_kinds_and_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown violation kind"):
        PenaltyPolicy.model_validate({"violations": {"slowness": {"first": 1, "repeat": 2}}})
    with pytest.raises(ValidationError):
        PenaltyPolicy.model_validate({"violations": {"lag": {"first": -1, "repeat": 2}}})
