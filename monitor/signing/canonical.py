"""The canonical byte encoding of a batch's results, and its keccak-256 hash.

The probe signs ``resultsHash`` (in the EIP-712 ``ProbeBatch`` message), not the results
themselves, so every verifier must rebuild exactly the same bytes from the results it received.
The rules are deliberately those of Python's ``json.dumps`` with fixed options, which any
language can reproduce because every value is an integer, a string, a boolean or null
(no floats, whose textual form differs between implementations). See docs/signing.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from eth_utils import keccak
from pydantic import BaseModel, TypeAdapter

from monitor.ingest.schemas import ProbeResult

# The exact key set of every encoded result object; taken from the model so the two cannot drift.
RESULT_FIELDS: frozenset[str] = frozenset(ProbeResult.model_fields)


# Value types that need no further look (the common case, checked by exact type: fast).
_PLAIN_TYPES = frozenset({int, str, bool, type(None)})
_RESULTS = TypeAdapter(list[ProbeResult])


def _as_dict(result: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """One result as a plain dict with exactly the ProbeResult fields, values checked."""
    data = result.model_dump(mode="python") if isinstance(result, BaseModel) else dict(result)
    return _checked(data)


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    keys = set(data)
    if keys != RESULT_FIELDS:
        missing = sorted(RESULT_FIELDS - keys)
        extra = sorted(keys - RESULT_FIELDS)
        raise ValueError(f"result fields differ from ProbeResult: missing={missing} extra={extra}")
    for key, value in data.items():
        if type(value) in _PLAIN_TYPES:
            continue
        # bool is an int subclass and is fine; float (and anything else, e.g. Decimal) is not:
        # its text form is not portable, so it must never reach the signed bytes.
        if isinstance(value, float):
            raise TypeError(f"result field {key!r} is a float; signed values are int/str/bool/null")
        if value is not None and not isinstance(value, int | str):
            raise TypeError(
                f"result field {key!r} has type {type(value).__name__}; "
                "signed values are int/str/bool/null"
            )
    return data


def canonical_results(results: Sequence[Mapping[str, Any] | BaseModel]) -> bytes:
    """The committed encoding: a compact, key-sorted, ASCII-only JSON array, UTF-8 encoded."""
    if isinstance(results, str | bytes):
        # A str is a Sequence too; catching it here gives a clear error instead of a KeyError.
        raise TypeError("results must be a sequence of result objects, not a string")
    if all(type(r) is ProbeResult for r in results):  # the collector's case: one dump for all
        items = [
            _checked(d)
            for d in _RESULTS.dump_python(cast(list[ProbeResult], list(results)), mode="python")
        ]
    else:
        items = [_as_dict(r) for r in results]
    text = json.dumps(
        items,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return text.encode("utf-8")


def results_hash(results: Sequence[Mapping[str, Any] | BaseModel]) -> str:
    """``"0x"`` + lowercase hex keccak-256 of :func:`canonical_results` (the ``resultsHash``)."""
    return "0x" + keccak(canonical_results(results)).hex()
