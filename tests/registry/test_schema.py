"""The registry YAML: a valid file parses; every error names the file, the entry and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_utils import is_checksum_address

from monitor.exceptions import ConfigError, RegistryError
from monitor.registry.schema import Registry, load_registry, parse_registry
from tests.registry.samples import PROBE_A, PROBE_B, SAMPLE

SOURCE = "registry.yaml"
PROBE_LOWER = PROBE_A.lower()
PROBE_CHECKSUM = PROBE_A
PROBE_2 = PROBE_B
VALID = SAMPLE

VALID_URL = VALID["operators"][0]["endpoints"][0]["url"]


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def parse(doc: Any) -> Registry:
    return parse_registry(yaml.safe_dump(doc, sort_keys=False), source=SOURCE)


def error_of(doc: Any) -> str:
    with pytest.raises(RegistryError) as info:
        parse(doc)
    message = info.value.message
    assert isinstance(info.value, ConfigError)  # the CLI turns it into exit 2
    assert str(info.value) == message
    for line in message.splitlines():
        assert line.startswith(f"{SOURCE}: "), line  # every problem names the file
    return message


def test_valid_file_parses() -> None:
    registry = parse(valid())
    assert [c.chain_id for c in registry.chains] == [1, 10]
    assert registry.chains[0].sla.latency_p95_ms == 250
    assert registry.chains[0].sla.max_lag_blocks == 2
    # Omitted SLA: the defaults.
    assert registry.chains[1].sla.availability == 0.999
    assert [o.id for o in registry.operators] == ["alpha", "bravo"]
    assert [e.url for e in registry.operators[0].endpoints] == [
        "https://alpha.example/eth?key=secret",
        "https://alpha.example/op",
    ]
    assert [p.region for p in registry.probes] == ["eu-west", "us-east"]


def test_probe_addresses_come_back_checksummed() -> None:
    registry = parse(valid())
    assert [p.address for p in registry.probes] == [PROBE_CHECKSUM, PROBE_2]


def test_empty_file_is_an_empty_registry() -> None:
    registry = parse_registry("", source=SOURCE)
    assert registry.chains == [] and registry.operators == [] and registry.probes == []


def test_load_registry_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(valid()))
    assert load_registry(path) == parse(valid())


def test_bad_operator_id() -> None:
    doc = valid()
    doc["operators"][1]["id"] = "Bravo Inc!"
    message = error_of(doc)
    assert "operators[1] (id=Bravo Inc!).id: " in message
    assert "pattern" in message


def test_bad_endpoint_url_names_operator_endpoint_and_field() -> None:
    doc = valid()
    doc["operators"][1]["endpoints"][0]["url"] = "ftp://nope"
    message = error_of(doc)
    assert message.startswith(f"{SOURCE}: operators[1] (id=bravo).endpoints[0].url: ")
    assert "pattern" in message


def test_endpoint_on_a_chain_not_in_chains() -> None:
    doc = valid()
    doc["operators"][1]["endpoints"].append({"chain_id": 999, "url": "http://b/999"})
    message = error_of(doc)
    assert message == (
        f"{SOURCE}: operators[1] (id=bravo).endpoints[1].chain_id: chain 999 is not in chains"
    )


def test_endpoint_listed_twice() -> None:
    doc = valid()
    doc["operators"][0]["endpoints"].append({"chain_id": 1, "url": VALID_URL})
    message = error_of(doc)
    assert "operators[0] (id=alpha).endpoints[2].url: listed twice for chain 1" in message


def test_duplicate_chain_id() -> None:
    doc = valid()
    doc["chains"].append({"chain_id": 10, "name": "again", "block_time_s": 2, "confirmations": 1})
    message = error_of(doc)
    assert message == f"{SOURCE}: chains[2].chain_id: 10 appears more than once"


def test_duplicate_operator_id() -> None:
    doc = valid()
    doc["operators"].append({"id": "alpha", "name": "Alpha again"})
    message = error_of(doc)
    assert message == f"{SOURCE}: operators[2].id: 'alpha' appears more than once"


def test_duplicate_probe_address_in_another_case() -> None:
    doc = valid()
    doc["probes"].append({"address": PROBE_CHECKSUM, "name": "again", "region": "x"})
    message = error_of(doc)
    assert f"probes[2].address: '{PROBE_CHECKSUM}' appears more than once" in message


@pytest.mark.parametrize(
    "address",
    ["0xabc", "52908400098527886E0F7030069857D2E4169EE7zz", "not an address", ""],
)
def test_bad_probe_address(address: str) -> None:
    doc = valid()
    doc["probes"][1]["address"] = address
    message = error_of(doc)
    assert message.startswith(f"{SOURCE}: probes[1] (address={address}).address: ")
    assert "not an Ethereum address" in message


@pytest.mark.parametrize(
    ("where", "location"),
    [
        (("chains", 0), "chains[0] (chain_id=1).colour: "),
        (("operators", 1), "operators[1] (id=bravo).colour: "),
        (("probes", 0), f"probes[0] (address={PROBE_LOWER}).colour: "),
        ((), "colour: "),
    ],
)
def test_unknown_extra_key(where: tuple[str | int, ...], location: str) -> None:
    doc = valid()
    node: Any = doc
    for part in where:
        node = node[part]
    node["colour"] = "blue"
    message = error_of(doc)
    assert location in message
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_several_problems_are_all_reported() -> None:
    doc = valid()
    doc["operators"][0]["id"] = "BAD"
    doc["probes"][0]["address"] = "0x1"
    lines = error_of(doc).splitlines()
    assert len(lines) == 2
    assert any("operators[0] (id=BAD).id" in line for line in lines)
    assert any("probes[0]" in line and ".address" in line for line in lines)


def test_missing_required_field() -> None:
    doc = valid()
    del doc["chains"][1]["block_time_s"]
    message = error_of(doc)
    assert "chains[1] (chain_id=10).block_time_s: Field required" in message


def test_not_yaml() -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry("chains: [\n  {chain_id: 1\n", source=SOURCE)
    assert info.value.message.startswith(f"{SOURCE}: not valid YAML")


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_top_level_not_a_mapping(text: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, source=SOURCE)
    assert info.value.message == (
        f"{SOURCE}: the top level must be a mapping with chains, operators, probes"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.message.startswith(f"{path}: cannot read")
    assert "No such file" in info.value.message


def test_errors_from_load_registry_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    doc = valid()
    doc["operators"][1]["id"] = "UPPER"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.message.startswith(f"{path}: operators[1] (id=UPPER).id: ")


def test_probe_address_with_a_wrong_checksum_is_refused() -> None:
    text = 'probes: [{address: "0x52908400098527886E0F7030069857D2E4169EEe", name: p, region: r}]'
    with pytest.raises(RegistryError) as excinfo:
        parse_registry(text, source="x.yaml")
    assert "x.yaml: probes[0]" in str(excinfo.value)
    assert "checksum" in str(excinfo.value)
    # All lower case carries no checksum and is accepted (and returned checksummed).
    lower = text.replace(
        "0x52908400098527886E0F7030069857D2E4169EEe", "0x52908400098527886e0f7030069857d2e4169eee"
    )
    address = parse_registry(lower, source="x.yaml").probes[0].address
    assert is_checksum_address(address)
    assert address.lower() == "0x52908400098527886e0f7030069857d2e4169eee"


# --- per-chain checks, quorum, scoring -----------------------------------------------------------


def test_checks_quorum_and_archive_parse_with_defaults() -> None:
    doc = valid()
    doc["chains"][0]["quorum"] = 3
    doc["chains"][0]["checks"] = {
        "old_block_hash": {"every_s": 120},
        "archive": {"address": "0x" + "ab" * 20, "block": 1000, "storage_slot": "0x0"},
    }
    doc["operators"][0]["endpoints"][0]["archive"] = True
    registry = parse(doc)
    chain = registry.chains[0]
    assert chain.quorum == 3
    assert chain.checks["old_block_hash"] == {"every_s": 120.0, "max_depth": 10_000}
    assert chain.checks["archive"]["every_s"] == 300.0  # the check's own default, filled in
    assert registry.operators[0].endpoints[0].archive is True
    assert registry.chains[1].quorum == 2 and registry.chains[1].checks == {}


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ({"nope": {}}, "chains[0] (chain_id=1).checks: Value error, unknown check 'nope'; known:"),
        ({"archive": {"block": 5}}, "archive.address: Field required"),
        ({"logs": {"range_blocks": 0}}, "logs.range_blocks: Input should be greater than"),
        ({"stalled": {"every_s": 5}}, "stalled.every_s: Extra inputs are not permitted"),
    ],
)
def test_bad_check_configuration_names_the_check_and_field(
    checks: dict[str, Any], expected: str
) -> None:
    doc = valid()
    doc["chains"][0]["checks"] = checks
    assert expected in error_of(doc)


def test_quorum_below_two_is_refused() -> None:
    doc = valid()
    doc["chains"][0]["quorum"] = 1
    assert "chains[0] (chain_id=1).quorum: Input should be greater than or equal to 2" in error_of(
        doc
    )


def test_scoring_section_parses_and_is_stored_without_defaults() -> None:
    doc = valid()
    doc["chains"][0]["scoring"] = {"preset": "prefer_freshest", "weights": {"lag": 3}}
    scoring = parse(doc).chains[0].scoring
    assert scoring.factor_weights().model_dump() == {
        "availability": 1.0,
        "latency": 0.5,  # the preset's
        "lag": 3.0,  # overridden
        "correctness": 1.0,
    }
    assert parse(valid()).chains[0].scoring.preset == "balanced"


@pytest.mark.parametrize(
    ("scoring", "expected"),
    [
        ({"min_availability": 1.5}, "scoring.min_availability: Input should be less than or equal"),
        ({"weights": {"latency": -1}}, "scoring.weights.latency: Input should be greater than"),
        ({"weights": {"price": 1}}, "scoring.weights.price"),
        ({"preset": "prefer_cheapest"}, "scoring.preset: Input should be 'balanced',"),
        ({"min_probes": 0}, "scoring.min_probes: Input should be greater than or equal to 1"),
        ({"recovery_s": 0}, "scoring.recovery_s: Input should be greater than 0"),
        ({"stale_after": 60}, "scoring.stale_after: Extra inputs are not permitted"),
    ],
)
def test_bad_scoring_value_names_the_chain_and_field(
    scoring: dict[str, Any], expected: str
) -> None:
    doc = valid()
    doc["chains"][0]["scoring"] = scoring
    message = error_of(doc)
    assert "chains[0] (chain_id=1)." + expected in message, message
