"""The syncing check: a node whose eth_syncing says it is far behind is stale (syncing), one in
sync is clean, garbage is malformed, and a provider that disables the method is not judged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitor.checks.registry import CHECKS
from tests.checks.test_head import (
    ChecksNet,
    Node,
    assert_consistent,
    checks_network,
    run_checks,
    run_rounds,
)

FAKE_NODES = {
    "behind": Node(syncing="behind"),
    "garbage": Node(syncing="garbage"),
    "unsupported": Node(syncing="unsupported"),
    "close": Node(syncing="close"),  # a status object one block from the tip: within tolerance
}
CHECKS_USED = {"head": CHECKS["head"], "syncing": CHECKS["syncing"]}


@pytest.fixture(scope="module")
def net() -> Iterator[ChecksNet]:
    with checks_network(FAKE_NODES, wait_blocks=1) as n:
        yield n


def test_syncing_states(net: ChecksNet) -> None:
    target = net.target("healthy-a", "healthy-b", "behind", "garbage", "unsupported", "close")
    results = run_checks(target)
    behind = results["behind"]
    assert (behind.ok, behind.error) == (True, "syncing")
    assert behind.correct is not False  # stale, not wrong: its blocks still agree
    assert (results["garbage"].error, results["garbage"].correct) == ("malformed", False)
    for name in ("healthy-a", "healthy-b", "unsupported", "close"):
        r = results[name]
        assert (r.ok, r.error, r.correct) == (True, None, True), name
    for r in results.values():
        assert_consistent(r, target)


def test_tolerance_and_cadence_come_from_the_registry(net: ChecksNet) -> None:
    lenient = {"syncing": {"tolerance_blocks": 1000}}
    target = net.target("healthy-a", "behind").model_copy(update={"checks": lenient})
    results = run_checks(target, CHECKS_USED)
    assert results["behind"].error is None


def test_runs_on_its_cadence_and_the_verdict_holds_between_runs(net: ChecksNet) -> None:
    # Two rounds sharing the probe's memory, well within the default 30 s: eth_syncing is asked
    # in the first round only, and the second round still says what it found.
    target = net.target("healthy-a", "behind")
    before = net.fake.calls.copy()
    first, second = run_rounds([target, target], CHECKS_USED)
    assert (net.fake.calls - before)["behind", "eth_syncing"] == 1
    assert {n: r.error for n, r in first.items()} == {"healthy-a": None, "behind": "syncing"}
    assert {n: r.error for n, r in second.items()} == {"healthy-a": None, "behind": "syncing"}


def test_every_s_zero_runs_every_round(net: ChecksNet) -> None:
    target = net.target("healthy-a", "behind").model_copy(
        update={"checks": {"syncing": {"every_s": 0}}}
    )
    before = net.fake.calls.copy()
    results = run_rounds([target, target], CHECKS_USED)
    assert (net.fake.calls - before)["behind", "eth_syncing"] == 2
    assert [r["behind"].error for r in results] == ["syncing", "syncing"]
