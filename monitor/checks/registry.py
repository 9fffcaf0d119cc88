"""The checks, in the order a round judges them (and a visit asks them). Adding a check: one
module (``plan``, ``judge``, optional ``ask`` and ``Config``; monitor.checks.base), one line here,
one section in docs/checks.md (and its options in the registry's ``chains[].checks.<name>``)."""

from __future__ import annotations

from monitor.checks import (
    archive,
    block_hash,
    call,
    chain_id,
    head,
    head_exists,
    logs,
    old_block_hash,
    stalled,
    syncing,
)
from monitor.checks.base import Check

CHECKS: dict[str, Check] = {
    "chain_id": Check.of(chain_id),
    "head": Check.of(head),
    "head_exists": Check.of(head_exists),
    "stalled": Check.of(stalled),
    "syncing": Check.of(syncing),
    "block_hash": Check.of(block_hash),
    "old_block_hash": Check.of(old_block_hash),
    "logs": Check.of(logs),
    "archive": Check.of(archive, default_on=False),
    "call": Check.of(call, default_on=False),
}
