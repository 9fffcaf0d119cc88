"""The checks, in the order a round runs them. Adding a check: one module, one line here, one
section in docs/checks.md (and its options in the registry's ``chains[].checks.<name>``)."""

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
    "chain_id": Check(chain_id.check),
    "head": Check(head.check),
    "head_exists": Check(head_exists.check, head_exists.Config),
    "stalled": Check(stalled.check, stalled.Config),
    "syncing": Check(syncing.check, syncing.Config),
    "block_hash": Check(block_hash.check),
    "old_block_hash": Check(old_block_hash.check, old_block_hash.Config),
    "logs": Check(logs.check, logs.Config),
    "archive": Check(archive.check, archive.Config, default_on=False),
    "call": Check(call.check, call.Config, default_on=False),
}
