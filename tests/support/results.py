"""Probe results for tests that feed collectors signed batches without running a probe."""

from __future__ import annotations

from monitor.ingest.schemas import ErrorKind, ProbeResult


def answered(
    *,
    endpoint_id: int,
    operator_id: str,
    chain_id: int,
    observed_at_ms: int,
    latency_us: int,
    head: int,
    lag: int = 0,
    block_hash: str | None,
    correct: bool | None,
    error: ErrorKind | None = None,
) -> ProbeResult:
    """A check the endpoint answered: its head ``lag`` blocks behind the reference ``head``,
    its hash at the check height (``head`` - 3) judged ``correct``."""
    return ProbeResult(
        endpoint_id=endpoint_id,
        operator_id=operator_id,
        chain_id=chain_id,
        observed_at_ms=observed_at_ms,
        ok=True,
        error=error,
        latency_us=latency_us,
        head=head - lag,
        reference_head=head,
        lag_blocks=lag,
        lag_ms=lag * 1_000,
        check_height=head - 3,
        block_hash=block_hash,
        correct=correct,
    )
