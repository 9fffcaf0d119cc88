"""The registry hash: formatting, comments, key order and implicit defaults do not change it,
every applied value does; the canonical JSON is itself a registry with the same hash; the recipe
of docs/governance.md recomputes it without monitor; the collectors section."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_utils import keccak

from monitor.exceptions import RegistryError
from monitor.registry.canonical import canonical_registry, registry_hash
from monitor.registry.schema import parse_registry
from tests.registry.samples import PROBE_A, PROBE_B, sample

DOC = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
COLLECTOR = "0xdcB6f58f1CbfF41B9A05A227db84A2CfD800a9C1"


def hash_of(doc: Any) -> str:
    return registry_hash(parse_registry(yaml.safe_dump(doc), source="r.yaml"))


def hash_of_text(text: str) -> str:
    return registry_hash(parse_registry(text, source="r.yaml"))


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_the_hash_is_keccak_of_the_canonical_json() -> None:
    registry = parse_registry(yaml.safe_dump(sample()), source="r.yaml")
    body = canonical_registry(registry)
    assert registry_hash(registry) == "0x" + keccak(body).hex()
    assert re.fullmatch(r"0x[0-9a-f]{64}", registry_hash(registry))
    # Compact, sorted, ASCII: the documented json.dumps options reproduce it byte for byte.
    value = json.loads(body)
    again = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    assert again.encode() == body


def test_formatting_comments_key_order_and_explicit_defaults_keep_the_hash() -> None:
    doc = sample()
    reference = hash_of(doc)
    # Another YAML style, comments, keys in another order.
    flow = yaml.safe_dump(doc, default_flow_style=True, sort_keys=False)
    assert hash_of_text("# the network's registry\n" + flow) == reference
    reordered = {key: doc[key] for key in reversed(list(doc))}
    reordered["chains"] = [dict(reversed(list(c.items()))) for c in doc["chains"]]
    assert hash_of_text(yaml.safe_dump(reordered, sort_keys=False)) == reference
    # A default written out, an int for a float, an address in lower case: the same values.
    explicit = sample()
    explicit["chains"][1]["quorum"] = 2
    explicit["chains"][0]["block_time_s"] = 12.0
    explicit["probes"][1]["address"] = PROBE_B.lower()
    explicit["collectors"] = []
    assert hash_of(explicit) == reference


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["chains"][0].update(confirmations=4),
        lambda d: d["chains"][0]["sla"].update(availability=0.991),
        lambda d: d["chains"][1].update(checks={"old_block_hash": {"every_s": 60}}),
        lambda d: d["operators"][0]["endpoints"][0].update(url="https://alpha.example/eth?key=x"),
        lambda d: d["operators"][1]["endpoints"][0].update(archive=True),
        lambda d: d["operators"][1].update(name="Bravo Nodes"),
        lambda d: d["probes"].pop(),
        lambda d: d["probes"][0].update(region="eu-central"),
        lambda d: d["probes"].reverse(),  # list order is a value too
        lambda d: d.update(penalties={"lookback_days": 30}),
        lambda d: d.update(collectors=[{"address": COLLECTOR, "name": "c1"}]),
    ],
    ids=[
        "confirmations",
        "sla",
        "checks",
        "endpoint-url",
        "archive",
        "operator-name",
        "probe-removed",
        "probe-region",
        "probe-order",
        "penalties",
        "collectors",
    ],
)
def test_every_applied_value_changes_the_hash(change: Any) -> None:
    doc = sample()
    reference = hash_of(doc)
    change(doc)
    assert hash_of(doc) != reference


def test_the_canonical_json_is_a_registry_with_the_same_hash() -> None:
    doc = sample()
    doc["operators"][0]["sla"] = {1: {"availability": 0.95}}  # int keys become strings
    doc["chains"][0]["checks"] = {"old_block_hash": {"every_s": 60}}
    doc["collectors"] = [{"address": COLLECTOR.lower(), "name": "c1", "url": "https://c1.x"}]
    registry = parse_registry(yaml.safe_dump(doc), source="r.yaml")
    body = canonical_registry(registry)
    again = parse_registry(body.decode(), source="canonical.json")
    assert again == registry
    assert canonical_registry(again) == body
    # Every default is spelled out for the reviewer.
    value = json.loads(body)
    assert value["chains"][1]["sla"]["availability"] == 0.999
    assert value["operators"][0]["sla"] == {
        "1": {
            "availability": 0.95,
            "correctness": None,
            "latency_p95_ms": None,
            "max_lag_blocks": None,
        }
    }
    assert value["probes"][0]["address"] == PROBE_A
    assert value["collectors"] == [{"address": COLLECTOR, "name": "c1", "url": "https://c1.x"}]


def test_the_documented_recipe_recomputes_the_hash_without_monitor(tmp_path: Path) -> None:
    (recipe,) = [b for b in python_blocks() if b.startswith("import json")]
    registry = parse_registry(yaml.safe_dump(sample()), source="r.yaml")
    (tmp_path / "registry.json").write_bytes(canonical_registry(registry))
    script = tmp_path / "recipe.py"
    script.write_text(recipe)
    proc = subprocess.run(
        [sys.executable, "-I", str(script)],  # isolated: the script alone, as an outsider runs it
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == registry_hash(registry)


# --- collectors ----------------------------------------------------------------------------------


def collectors_error(collectors: Any) -> str:
    doc = sample()
    doc["collectors"] = collectors
    with pytest.raises(RegistryError) as info:
        parse_registry(yaml.safe_dump(doc), source="r.yaml")
    return info.value.message


def test_collectors_parse_checksummed_and_url_optional() -> None:
    doc = sample()
    doc["collectors"] = [
        {"address": COLLECTOR.lower(), "name": "foundation-eu", "url": "https://c1.example/api"},
        {"address": PROBE_A, "name": "dao"},
    ]
    registry = parse_registry(yaml.safe_dump(doc), source="r.yaml")
    assert [(c.address, c.url) for c in registry.collectors] == [
        (COLLECTOR, "https://c1.example/api"),
        (PROBE_A, None),
    ]
    assert parse_registry(yaml.safe_dump(sample()), source="r.yaml").collectors == []


@pytest.mark.parametrize(
    ("collectors", "expected"),
    [
        (
            [{"address": COLLECTOR.replace("dcB6", "DCB6"), "name": "c"}],
            "r.yaml: collectors[0] (address=0xDCB6",
        ),
        ([{"address": "0x1234", "name": "c"}], "collectors[0] (address=0x1234).address"),
        ([{"address": COLLECTOR, "name": ""}], "collectors[0] (address=0xdcB6"),
        (
            [{"address": COLLECTOR, "name": "c", "url": "https://u:p@c.example"}],
            "no user info, query or fragment",
        ),
        ([{"address": COLLECTOR, "name": "c", "url": "https://c.example/?k=1"}], "no user info"),
        ([{"address": COLLECTOR, "name": "c", "url": "ftp://c.example"}], "collectors[0]"),
        ([{"address": COLLECTOR, "name": "c", "region": "eu"}], "collectors[0]"),
        (
            [{"address": COLLECTOR, "name": "a"}, {"address": COLLECTOR.lower(), "name": "b"}],
            "r.yaml: collectors[1].address: '0xdcB6f58f1CbfF41B9A05A227db84A2CfD800a9C1' "
            "appears more than once",
        ),
    ],
    ids=["checksum", "not-address", "empty-name", "user-info", "query", "scheme", "extra", "twice"],
)
def test_bad_collectors_are_refused_naming_the_entry(collectors: Any, expected: str) -> None:
    assert expected in collectors_error(collectors)
