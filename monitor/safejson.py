"""JSON from other parties (operators' nodes, peer collectors), parsed without letting them
crash the process.

``json.loads`` recurses in C. eth-account imports py_ecc, which raises Python's recursion limit
to 100000, so a body nested a few hundred thousand deep overflows the C stack and kills the
process (a segfault, not an exception). Nesting is therefore measured before parsing, with a
scan that stays linear on hostile input.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Strings are matched whole, so brackets inside them do not count towards nesting; possessive
# quantifiers and an optional closing quote keep the scan linear on hostile input.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)


def json_depth(body: bytes) -> int:
    """How deep ``body``'s brackets outside strings nest (0 for a scalar)."""
    depth = deepest = 0
    for token in _TOKENS.findall(body):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def loads(body: bytes, *, max_depth: int) -> Any:
    """``json.loads``, refusing (ValueError) a body nested deeper than ``max_depth``."""
    if json_depth(body) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth}")
    return json.loads(body)
