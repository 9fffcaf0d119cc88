"""The checks, in the order a round runs them. Adding a check: one module, one line here, one
section in docs/checks.md."""

from __future__ import annotations

from monitor.checks import block_hash, chain_id, head
from monitor.checks.base import CheckFn

CHECKS: dict[str, CheckFn] = {
    "chain_id": chain_id.check,
    "head": head.check,
    "block_hash": block_hash.check,
}
