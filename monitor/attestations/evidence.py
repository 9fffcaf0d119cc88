"""From raw signed probe batches to an attestation's figures: the one pure function that the
issuer and every verifier run (docs/attestations.md, "Figures").

Nothing here reads the database or the rollups: the input is the batch bodies exactly as the
probes signed them, so anyone holding them reaches the same figures to the last digit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.attestations.merkle import hex_root
from monitor.exceptions import BadSignature, InvalidEvidence, MalformedRequest
from monitor.ingest.service import batch_hash, parse_batch
from monitor.signing.eip712 import verify_batch
from monitor.sla.judge import MinuteVerdict, ProbeMinute, SlaFigures, SlaTargets, evaluate
from monitor.sla.service import longest_run

MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Evidence:
    figures: SlaFigures
    minutes: dict[int, MinuteVerdict]  # minute index from the start -> its verdict (judged ones)
    longest_outage_minutes: int  # longest run of consecutive minutes down for "unavailable"
    probes: tuple[str, ...]  # EIP-55, sorted by value: the probes whose results were counted
    batch_hashes: tuple[str, ...]  # distinct, sorted: the Merkle tree's leaves
    root: str  # the Merkle root over batch_hashes
    idle_batches: tuple[str, ...]  # hashes of batches with no result of the subject in the period


def unix_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("naive datetime: attestation periods are UTC-aware")
    return (t - _EPOCH) // timedelta(milliseconds=1)


def evaluate_evidence(
    bodies: Iterable[bytes | str],
    *,
    operator_id: str,
    chain_id: int,
    start: datetime,
    end: datetime,
    targets: SlaTargets,
    probes: Collection[str],
) -> Evidence:
    """The SLA figures of ``operator_id`` on ``chain_id`` over ``[start, end)`` (whole minutes)
    from these batch bodies.

    Each body is parsed and its probe signature verified (monitor.signing.eip712.verify_batch);
    its signer must be in ``probes`` (compared case-insensitively). A body given twice counts
    once; two different bodies with the same probe and batch id are refused. Every result of the
    subject observed in the period (``observed_at_ms`` in ``[start, end)``) goes into the
    probe-minute of its signer and minute (``(observed_at_ms - start) // 60000``); the period is
    then judged by monitor.sla.judge.evaluate. Raises InvalidEvidence naming the batch.
    """
    start_ms, end_ms = unix_ms(start), unix_ms(end)
    if start_ms % MINUTE_MS or end_ms % MINUTE_MS or end_ms <= start_ms:
        raise ValueError("the period must be whole minutes, end after start")
    allowed = {p.lower() for p in probes}
    data: dict[int, dict[object, ProbeMinute]] = defaultdict(dict)
    hashes: set[str] = set()
    batch_ids: dict[tuple[str, str], str] = {}
    counted: set[str] = set()
    idle: list[str] = []
    for body in bodies:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        digest = batch_hash(raw)
        if digest in hashes:
            continue
        hashes.add(digest)
        try:
            batch = parse_batch(raw)
            signer = verify_batch(batch)
        except (MalformedRequest, BadSignature) as exc:
            raise InvalidEvidence(f"batch {digest}: {exc.message}") from None
        if signer.lower() not in allowed:
            raise InvalidEvidence(f"batch {digest} is signed by {signer}, not by a known probe")
        key = (signer.lower(), batch.message.batchId)
        if key in batch_ids:
            raise InvalidEvidence(
                f"batch {digest} is batch {key[1]} of probe {signer} again (as {batch_ids[key]}): "
                "a probe's batch counts once"
            )
        batch_ids[key] = digest
        used = False
        for r in batch.results:
            if r.operator_id != operator_id or r.chain_id != chain_id:
                continue
            if not start_ms <= r.observed_at_ms < end_ms:
                continue
            minute = (r.observed_at_ms - start_ms) // MINUTE_MS
            data[minute].setdefault(signer, ProbeMinute()).add(
                ok=r.ok, correct=r.correct, lag_blocks=r.lag_blocks, latency_us=r.latency_us
            )
            used = True
        if used:
            counted.add(signer)
        else:
            idle.append(digest)
    figures, verdicts = evaluate(data, minutes=(end_ms - start_ms) // MINUTE_MS, targets=targets)
    down = [
        (start + timedelta(minutes=m), v.reasons)
        for m, v in sorted(verdicts.items())
        if v.state == "down"
    ]
    leaves = tuple(sorted(hashes))
    return Evidence(
        figures=figures,
        minutes=verdicts,
        longest_outage_minutes=longest_run(down, "unavailable"),
        probes=tuple(sorted(counted, key=str.lower)),
        batch_hashes=leaves,
        root=hex_root(leaves),
        idle_batches=tuple(sorted(idle)),
    )
