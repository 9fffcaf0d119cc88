"""The registry's canonical encoding and its hash: what governance signs and collectors compare.

The hash is taken of the *validated* registry with every default filled in, not of the YAML as
written: comments, key order, quoting and YAML style do not change it, and neither does writing a
default out or leaving it implicit; every value that the collector applies does. Two collectors
that show the same hash at ``GET /v1/identity`` apply the same registry, even on different
software versions whose defaults differ (their hashes then differ, which is the point).

The JSON rules are those of the batch encoding (monitor.signing.canonical): Python's
``json.dumps`` with sorted keys, no spaces, ASCII only, no NaN. The registry holds floats
(``block_time_s``, SLA fractions); Python writes each as its shortest round-trip repr, which is
why the reference recipe (docs/governance.md) is Python's.
"""

from __future__ import annotations

import json
from typing import Any

from eth_utils import keccak

from monitor.registry.schema import Registry


def canonical_json(value: Any) -> bytes:
    """Compact, key-sorted, ASCII-only JSON, UTF-8 encoded."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("utf-8")


def canonical_registry(registry: Registry) -> bytes:
    """The registry as canonical JSON: ``model_dump(mode="json")`` (defaults filled in, addresses
    EIP-55, mapping keys as strings), then :func:`canonical_json`. It is itself a valid registry
    file (JSON is YAML) with the same hash: what a signer can review, every default spelled out."""
    return canonical_json(registry.model_dump(mode="json"))


def hash_bytes(body: bytes) -> str:
    return "0x" + keccak(body).hex()


def registry_hash(registry: Registry) -> str:
    """``"0x"`` + lowercase hex keccak-256 of :func:`canonical_registry`."""
    return hash_bytes(canonical_registry(registry))
