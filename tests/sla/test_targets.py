"""SLA targets from the registry: the chain's section, an operator's overrides, the penalty
policy stored with its hash, and mistakes named by file, entry and field."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine

from monitor.attestations.models import Document
from monitor.db.models import Chain, Operator
from monitor.db.session import session_scope
from monitor.exceptions import RegistryError
from monitor.registry.apply import apply_registry
from monitor.registry.schema import parse_registry
from monitor.sla.penalties import PenaltyPolicy, policy_hash
from monitor.sla.targets import subject_targets
from tests.sla.support import make_fleet, registry_text

PREMIUM = (
    "  - {id: gold, name: Gold, endpoints: [{chain_id: 1, url: 'http://gold.test/'}],\n"
    "     sla: {1: {availability: 0.9995, latency_p95_ms: 150}}}\n"
)
PENALTIES = (
    "penalties:\n  lookback_days: 30\n  outage_minutes: 15\n"
    "  violations: {outage: {first: 2500, repeat: 5000}}\n"
)


def test_operator_overrides_and_the_penalty_policy_are_applied(engine: Engine) -> None:
    fleet = make_fleet(engine)
    text = registry_text(fleet.probes).replace("probes:\n", PREMIUM + "probes:\n", 1) + PENALTIES
    with session_scope(engine) as session:
        apply_registry(session, registry=parse_registry(text, source="r.yaml"))
    with session_scope(engine) as session:
        chain = session.get(Chain, 1)
        gold, alpha = session.get(Operator, "gold"), session.get(Operator, "alpha")
        assert chain is not None and gold is not None and alpha is not None
        base, premium = subject_targets(chain, alpha), subject_targets(chain, gold)
        assert (base.availability_ppm, base.latency_p95_ms) == (990_000, 250)
        assert (premium.availability_ppm, premium.latency_p95_ms) == (999_500, 150)
        assert premium.max_lag_blocks == base.max_lag_blocks == 2  # not overridden
        assert (base.correctness_ppm, base.min_probes, base.min_coverage_ppm) == (
            999_000,
            2,
            500_000,
        )
        document = session.get(Document, "penalty_policy")
        assert document is not None
        policy = PenaltyPolicy.model_validate_json(document.body)
        assert policy.lookback_days == 30 and set(policy.violations) == {"outage"}
        assert document.hash == policy_hash(policy)


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            "  - {id: gold, name: Gold, sla: {7: {availability: 0.9}}}\n",
            "r.yaml: operators[2] (id=gold).sla[7]: chain 7 is not in chains",
        ),
        (
            "  - {id: gold, name: Gold, sla: {1: {availability: 1.5}}}\n",
            "r.yaml: operators[2] (id=gold).sla[1].availability: Input should be less than",
        ),
        (
            "  - {id: gold, name: Gold, sla: {1: {uptime: 0.9}}}\n",
            "r.yaml: operators[2] (id=gold).sla[1].uptime: Extra inputs are not permitted",
        ),
    ],
)
def test_override_mistakes_are_named(engine: Engine, extra: str, message: str) -> None:
    fleet = make_fleet(engine)
    text = registry_text(fleet.probes).replace("probes:\n", extra + "probes:\n", 1)
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(text, source="r.yaml")


def test_penalty_mistakes_are_named(engine: Engine) -> None:
    fleet = make_fleet(engine)
    text = registry_text(fleet.probes) + "penalties: {violations: {slow: {first: 1, repeat: 1}}}\n"
    with pytest.raises(RegistryError, match=r"r.yaml: penalties.violations: .*unknown violation"):
        parse_registry(text, source="r.yaml")
