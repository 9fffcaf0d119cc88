"""The registry YAML's model. Errors name the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from eth_utils import is_address, is_checksum_address, keccak, to_checksum_address
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from monitor.checks.registry import CHECKS
from monitor.exceptions import RegistryError
from monitor.scoring.config import ScoringConfig
from monitor.sla.penalties import PenaltyPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlaTargets(_Strict):
    """A chain's SLA (docs/sla.md): what an operator's minutes and periods are judged against."""

    availability: float = Field(0.999, gt=0, le=1)
    latency_p95_ms: float = Field(500, gt=0, le=600_000)
    max_lag_blocks: int = Field(3, gt=0, le=1_000_000)
    correctness: float = Field(0.999, gt=0, le=1)  # share of checks proven correct
    min_probes: int = Field(2, ge=1, le=100)  # probes that must have checked a minute to judge it
    min_coverage: float = Field(0.5, ge=0, le=1)  # judged share of a period's minutes for a verdict


class SlaOverrides(_Strict):
    """An operator's own targets on one chain; what is not given is the chain's."""

    availability: float | None = Field(None, gt=0, le=1)
    latency_p95_ms: float | None = Field(None, gt=0, le=600_000)
    max_lag_blocks: int | None = Field(None, gt=0, le=1_000_000)
    correctness: float | None = Field(None, gt=0, le=1)


class ChainEntry(_Strict):
    chain_id: int = Field(gt=0)
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    block_time_s: float = Field(gt=0)
    confirmations: int = Field(ge=0)
    # Agreeing answers any majority vote needs (block hashes, logs, state): fewer -> unknown.
    quorum: int = Field(2, ge=2, le=100)
    sla: SlaTargets = SlaTargets()
    # check name -> its options (monitor/checks/<name>.py: Config); see docs/checks.md
    checks: dict[str, dict[str, Any]] = {}
    scoring: ScoringConfig = ScoringConfig()

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, section in value.items():
            check = CHECKS.get(name)
            if check is None:
                raise ValueError(f"unknown check {name!r}; known: {', '.join(CHECKS)}")
            try:
                config = check.config.model_validate(section or {})
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{name}.{where}: {first['msg']}") from None
            out[name] = config.model_dump(mode="json")
        return out


def endpoint_id(operator_id: str, chain_id: int, url: str) -> int:
    """An endpoint's id, the same on every collector that applies the registry: probes sign it
    and collectors exchange their batches (docs/decentralization.md). The first 52 bits of
    keccak256("<operator>\\n<chain id>\\n<url>"), plus one: never 0, and exact in a JSON
    reader's double (below 2**53)."""
    digest = keccak(f"{operator_id}\n{chain_id}\n{url}".encode())
    return (int.from_bytes(digest[:8], "big") >> 12) + 1


class EndpointEntry(_Strict):
    chain_id: int = Field(gt=0)
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    archive: bool = False  # keeps historical state: asked by the archive check

    @field_validator("url")
    @classmethod
    def _parsable(cls, value: str) -> str:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a port that is not a number in range
        if not parts.hostname:
            raise ValueError("URL has no host")
        return value


class OperatorEntry(_Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    endpoints: list[EndpointEntry] = []
    # chain id -> this operator's SLA there, overriding the chain's targets (a premium tier)
    sla: dict[int, SlaOverrides] = {}


def checked_address(value: str) -> str:
    """``value`` as an EIP-55 address; a mixed-case one must carry a valid checksum."""
    if not is_address(value):
        raise ValueError("not an Ethereum address (0x followed by 40 hex digits)")
    mixed_case = value[2:] not in (value[2:].lower(), value[2:].upper())
    if mixed_case and not is_checksum_address(value):
        # A typo in a checksummed address would otherwise register a different signer.
        raise ValueError("EIP-55 checksum does not match: check the address for a typo")
    return to_checksum_address(value)


class ProbeEntry(_Strict):
    address: str
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)]

    @field_validator("address")
    @classmethod
    def _checksum(cls, value: str) -> str:
        return checked_address(value)


class CollectorEntry(_Strict):
    """A collector of the network: whose signatures (weights, attestations) count as a
    registered collector's (docs/governance.md)."""

    address: str  # its signing address, as GET /v1/identity shows it
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = None

    @field_validator("address")
    @classmethod
    def _checksum(cls, value: str) -> str:
        return checked_address(value)

    @field_validator("url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a port that is not a number in range
        if not parts.hostname:
            raise ValueError("URL has no host")
        if "@" in parts.netloc or parts.query or parts.fragment:
            # Published at GET /v1/identity: a base URL only, never credentials.
            raise ValueError("a collector URL is public: no user info, query or fragment")
        return value


class Registry(_Strict):
    chains: list[ChainEntry] = []
    operators: list[OperatorEntry] = []
    probes: list[ProbeEntry] = []
    # The network's collectors (docs/governance.md); optional.
    collectors: list[CollectorEntry] = []
    # The penalty policy (docs/sla.md, "From verdicts to consequences"); defaults when absent.
    penalties: PenaltyPolicy = PenaltyPolicy()

    def check_references(self) -> list[str]:
        """Cross-entry problems pydantic cannot see: duplicates, unknown chains."""
        problems: list[str] = []
        chain_ids = [c.chain_id for c in self.chains]
        problems += _duplicates("chains", "chain_id", chain_ids)
        problems += _duplicates("operators", "id", [o.id for o in self.operators])
        problems += _duplicates("probes", "address", [p.address for p in self.probes])
        problems += _duplicates("collectors", "address", [c.address for c in self.collectors])
        ids: dict[int, tuple[tuple[str, int, str], str]] = {}
        for i, operator in enumerate(self.operators):
            seen: set[tuple[int, str]] = set()
            for j, endpoint in enumerate(operator.endpoints):
                where = f"operators[{i}] (id={operator.id}).endpoints[{j}]"
                if endpoint.chain_id not in chain_ids:
                    problems.append(f"{where}.chain_id: chain {endpoint.chain_id} is not in chains")
                if (endpoint.chain_id, endpoint.url) in seen:
                    problems.append(f"{where}.url: listed twice for chain {endpoint.chain_id}")
                seen.add((endpoint.chain_id, endpoint.url))
                key = (operator.id, endpoint.chain_id, endpoint.url)
                first = ids.setdefault(endpoint_id(*key), (key, where))
                if first[0] != key:  # 52 bits: about one registry in 10**6 at 100,000 endpoints
                    problems.append(
                        f"{where}.url: its id collides with {first[1]}'s; change either URL "
                        "(e.g. a trailing slash)"
                    )
            for chain_id in operator.sla:
                if chain_id not in chain_ids:
                    problems.append(
                        f"operators[{i}] (id={operator.id}).sla[{chain_id}]: chain {chain_id} is "
                        "not in chains"
                    )
        return problems


def _duplicates(section: str, field: str, values: list[Any]) -> list[str]:
    seen: set[Any] = set()
    out = []
    for i, value in enumerate(values):
        if value in seen:
            out.append(f"{section}[{i}].{field}: {value!r} appears more than once")
        seen.add(value)
    return out


def _describe_location(data: Any, loc: tuple[int | str, ...]) -> str:
    """('operators', 1, 'endpoints', 0, 'url') -> 'operators[1] (id=bravo).endpoints[0].url'.

    Only a top-level entry is named by its key, which is how a reader finds it in the file.
    """
    out = ""
    node = data
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            try:
                node = node[part]
            except (IndexError, KeyError, TypeError):
                node = None
            if depth == 1 and isinstance(node, dict):
                key = next((k for k in ("id", "chain_id", "address", "name") if k in node), None)
                if key is not None:
                    out += f" ({key}={node[key]})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def parse_registry(text: str, *, source: str) -> Registry:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError(
            f"{source}: the top level must be a mapping with chains, operators, probes"
        )
    try:
        registry = Registry.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{source}: {_describe_location(data, tuple(err['loc']))}: {err['msg']}"
            for err in exc.errors()
        ]
        raise RegistryError("\n".join(lines)) from None
    problems = registry.check_references()
    if problems:
        raise RegistryError("\n".join(f"{source}: {p}" for p in problems))
    return registry


def load_registry(path: Path) -> Registry:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_registry(text, source=str(path))
