"""Applying a registry, on SQLite and PostgreSQL: idempotent upsert; what the file no longer lists
is deactivated (never deleted) and comes back active when listed again."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from sqlalchemy import Engine, select

from monitor.db.models import Chain, Endpoint, Operator, Probe
from monitor.db.session import session_scope
from monitor.registry.apply import KINDS, ApplySummary, apply_registry
from monitor.registry.schema import parse_registry
from tests.conftest import row_counts
from tests.registry.samples import PROBE_A, PROBE_B, SAMPLE

DOC = SAMPLE


def doc() -> dict[str, Any]:
    return copy.deepcopy(DOC)


def apply(engine: Engine, document: dict[str, Any]) -> ApplySummary:
    registry = parse_registry(yaml.safe_dump(document), source="registry.yaml")
    with session_scope(engine) as session:
        return apply_registry(session, registry=registry)


def counts(**non_zero: dict[str, int]) -> dict[str, dict[str, int]]:
    out = {name: dict.fromkeys(KINDS, 0) for name in ("created", "updated", "deactivated")}
    for name, values in non_zero.items():
        out[name].update(values)
    return out


def summary_counts(summary: ApplySummary) -> dict[str, dict[str, int]]:
    return {
        "created": summary.created,
        "updated": summary.updated,
        "deactivated": summary.deactivated,
    }


def state(engine: Engine) -> dict[str, dict[Any, bool]]:
    """Every registry row, keyed like the file, with its active flag."""
    with session_scope(engine) as session:
        return {
            "chains": {c.chain_id: c.active for c in session.scalars(select(Chain))},
            "operators": {o.id: o.active for o in session.scalars(select(Operator))},
            "endpoints": {
                (e.operator_id, e.chain_id, e.url): e.active
                for e in session.scalars(select(Endpoint))
            },
            "probes": {p.address: p.active for p in session.scalars(select(Probe))},
        }


def test_apply_creates_rows(engine: Engine) -> None:
    summary = apply(engine, doc())
    assert summary_counts(summary) == counts(
        created={"chains": 2, "operators": 2, "endpoints": 3, "probes": 2}
    )
    assert "chains: 2 created, 0 updated, 0 deactivated" in str(summary)
    assert state(engine) == {
        "chains": {1: True, 10: True},
        "operators": {"alpha": True, "bravo": True},
        "endpoints": {
            ("alpha", 1, "https://alpha.example/eth?key=secret"): True,
            ("alpha", 10, "https://alpha.example/op"): True,
            ("bravo", 1, "http://b/"): True,
        },
        # Stored checksummed whatever the file's case.
        "probes": {PROBE_A: True, PROBE_B: True},
    }
    with session_scope(engine) as session:
        chain = session.get(Chain, 1)
        assert chain is not None
        assert (chain.name, chain.block_time_s, chain.confirmations) == ("mainnet", 12, 3)
        assert (chain.sla_availability, chain.sla_latency_p95_ms, chain.sla_max_lag_blocks) == (
            0.99,
            250,
            2,
        )
        probe = session.scalar(select(Probe).where(Probe.address == PROBE_A))
        assert probe is not None
        assert (probe.name, probe.region) == ("probe-eu", "eu-west")


def test_applying_the_same_file_twice_changes_nothing(engine: Engine) -> None:
    apply(engine, doc())
    before_rows = row_counts(engine)
    with session_scope(engine) as session:
        stamps = sorted(str(c.updated_at) for c in session.scalars(select(Chain)))
    summary = apply(engine, doc())
    assert summary_counts(summary) == counts()
    assert row_counts(engine) == before_rows
    with session_scope(engine) as session:
        assert sorted(str(c.updated_at) for c in session.scalars(select(Chain))) == stamps


def test_removed_entries_are_deactivated_and_come_back(engine: Engine) -> None:
    apply(engine, doc())
    before_rows = row_counts(engine)

    smaller = doc()
    del smaller["operators"][1]  # bravo and its endpoint
    del smaller["operators"][0]["endpoints"][1]  # alpha on chain 10
    del smaller["probes"][1]
    summary = apply(engine, smaller)
    assert summary_counts(summary) == counts(
        deactivated={"operators": 1, "endpoints": 2, "probes": 1}
    )
    assert row_counts(engine) == before_rows  # deactivated, not deleted
    now = state(engine)
    assert now["operators"] == {"alpha": True, "bravo": False}
    assert now["endpoints"] == {
        ("alpha", 1, "https://alpha.example/eth?key=secret"): True,
        ("alpha", 10, "https://alpha.example/op"): False,
        ("bravo", 1, "http://b/"): False,
    }
    assert now["probes"] == {PROBE_A: True, PROBE_B: False}
    assert now["chains"] == {1: True, 10: True}

    # Applying the smaller file again: nothing more to deactivate.
    assert summary_counts(apply(engine, smaller)) == counts()

    summary = apply(engine, doc())
    assert summary_counts(summary) == counts(updated={"operators": 1, "endpoints": 2, "probes": 1})
    assert row_counts(engine) == before_rows
    assert all(all(flags.values()) for flags in state(engine).values())


def test_removed_chain_is_deactivated(engine: Engine) -> None:
    apply(engine, doc())
    smaller = doc()
    del smaller["chains"][1]
    del smaller["operators"][0]["endpoints"][1]
    summary = apply(engine, smaller)
    assert summary_counts(summary) == counts(deactivated={"chains": 1, "endpoints": 1})
    assert state(engine)["chains"] == {1: True, 10: False}
    assert summary_counts(apply(engine, doc())) == counts(updated={"chains": 1, "endpoints": 1})
    assert state(engine)["chains"] == {1: True, 10: True}


def test_changing_a_chains_sla_updates_it(engine: Engine) -> None:
    apply(engine, doc())
    with session_scope(engine) as session:
        chain = session.get(Chain, 1)
        assert chain is not None
        stamp = chain.updated_at

    changed = doc()
    changed["chains"][0]["sla"] = {"availability": 0.9, "latency_p95_ms": 800, "max_lag_blocks": 5}
    summary = apply(engine, changed)
    assert summary_counts(summary) == counts(updated={"chains": 1})
    with session_scope(engine) as session:
        chain = session.get(Chain, 1)
        assert chain is not None
        assert (chain.sla_availability, chain.sla_latency_p95_ms, chain.sla_max_lag_blocks) == (
            0.9,
            800,
            5,
        )
        assert chain.updated_at >= stamp
        other = session.get(Chain, 10)
        assert other is not None
        assert other.sla_availability == 0.999  # the default, untouched
    assert summary_counts(apply(engine, changed)) == counts()


def test_renaming_an_operator_and_a_probe_updates_them(engine: Engine) -> None:
    apply(engine, doc())
    changed = doc()
    changed["operators"][1]["name"] = "Bravo Nodes"
    changed["probes"][0]["region"] = "eu-central"
    summary = apply(engine, changed)
    assert summary_counts(summary) == counts(updated={"operators": 1, "probes": 1})
    with session_scope(engine) as session:
        operator = session.get(Operator, "bravo")
        assert operator is not None and operator.name == "Bravo Nodes"
        probe = session.scalar(select(Probe).where(Probe.address == PROBE_A))
        assert probe is not None and probe.region == "eu-central"


def test_a_changed_url_is_a_new_endpoint(engine: Engine) -> None:
    """Endpoints are keyed by (operator, chain, url): the old one is kept, inactive, for history."""
    apply(engine, doc())
    changed = doc()
    changed["operators"][1]["endpoints"][0]["url"] = "http://bravo/v2"
    summary = apply(engine, changed)
    assert summary_counts(summary) == counts(created={"endpoints": 1}, deactivated={"endpoints": 1})
    endpoints = state(engine)["endpoints"]
    assert endpoints[("bravo", 1, "http://b/")] is False
    assert endpoints[("bravo", 1, "http://bravo/v2")] is True
