"""The wire format of a signed batch (``POST /v1/batches``) and of the collector's answer.

Every field of a result that is signed is an integer, a string, a boolean or null: the canonical
encoding (monitor.signing.canonical) is then byte-exact in any language, with no float formatting
to agree on. Latency travels in microseconds and lag in milliseconds for that reason; the database
keeps them as ``latency_ms`` and ``lag_seconds``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

ErrorKind = Literal[
    "timeout",  # no answer within the per-request timeout: unavailable
    "transport",  # connection refused/reset, DNS, TLS: unavailable
    "http_status",  # HTTP status other than 200: unavailable
    "rpc_error",  # a well-formed JSON-RPC error object: unavailable
    "malformed",  # not JSON-RPC, wrong types, hash that is not a hash: incorrect
    "wrong_chain",  # eth_chainId differs from the registry: incorrect
    "wrong_hash",  # block hash at check_height differs from the majority: incorrect
    "head_ahead",  # head far above the reference head no one else confirms: incorrect
    "head_missing",  # cannot return the block at the head it claims: incorrect
    "wrong_old_hash",  # block hash at a random older height differs from the majority: incorrect
    "wrong_logs",  # eth_getLogs over a recent range differs from the majority: incorrect
    "wrong_state",  # archive balance/storage at a historical block differs: incorrect
    "wrong_call",  # the eth_call canary's answer differs from the majority: incorrect
    "syncing",  # eth_syncing says the node is still syncing: stale, answered
    "stalled",  # head unchanged for longer than allowed while the chain moved on: stale, answered
]

UNAVAILABLE_ERRORS = frozenset({"timeout", "transport", "http_status", "rpc_error"})
INCORRECT_ERRORS = frozenset(
    {
        "malformed",
        "wrong_chain",
        "wrong_hash",
        "head_ahead",
        "head_missing",
        "wrong_old_hash",
        "wrong_logs",
        "wrong_state",
        "wrong_call",
    }
)
# Answered (ok) and not judged incorrect, but serving old data; correct may be true or unknown.
STALE_ERRORS = frozenset({"syncing", "stalled"})

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Hash32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
UInt64 = Annotated[int, Field(ge=0, le=2**63 - 1)]  # what a PostgreSQL bigint holds
# Unix milliseconds up to the end of year 9999, the last instant a datetime can hold.
UnixMs = Annotated[int, Field(ge=0, le=253_402_300_799_999)]


class ProbeResult(BaseModel):
    """One check of one endpoint in one round, as the probe saw it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    endpoint_id: UInt64
    operator_id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    chain_id: UInt64
    observed_at_ms: UnixMs  # unix time, milliseconds, when the head request was sent
    ok: bool  # the endpoint answered (available); false on timeout/transport/http/rpc errors
    error: ErrorKind | None
    latency_us: UInt64 | None  # eth_blockNumber round trip, microseconds, monotonic clock
    head: UInt64 | None
    reference_head: UInt64 | None
    lag_blocks: UInt64 | None  # reference_head - head, never negative
    lag_ms: UInt64 | None  # lag_blocks * block_time_s, in milliseconds
    check_height: UInt64 | None  # reference_head - confirmations
    block_hash: Hash32 | None  # this endpoint's hash at check_height
    correct: bool | None  # None: unknown (no quorum, or endpoint below check_height)

    @model_validator(mode="after")
    def _consistent(self) -> ProbeResult:
        """A result that contradicts itself is refused: its error kinds feed the scores."""
        if self.ok:
            if self.error in UNAVAILABLE_ERRORS:
                raise ValueError(f"ok is true but error {self.error!r} means unavailable")
        elif self.error not in UNAVAILABLE_ERRORS:
            raise ValueError(
                "ok is false: error must be timeout, transport, http_status or rpc_error"
            )
        elif (self.latency_us, self.lag_blocks, self.correct) != (None, None, None):
            raise ValueError("ok is false: latency_us, lag_blocks and correct must be null")
        if (self.correct is False) != (self.error in INCORRECT_ERRORS):
            raise ValueError(
                "correct is false exactly when error is one of the incorrect kinds: "
                + ", ".join(sorted(INCORRECT_ERRORS))
            )
        if self.lag_blocks is not None:
            if self.head is None or self.reference_head is None:
                raise ValueError("lag_blocks needs head and reference_head")
            if self.lag_blocks != max(0, self.reference_head - self.head):
                raise ValueError("lag_blocks is not max(0, reference_head - head)")
        return self


class BatchMessage(BaseModel):
    """The EIP-712 message the probe signs; field names are the typed-data names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    probe: Address
    batchId: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    createdAt: UnixMs  # unix time, milliseconds
    resultsHash: Hash32
    resultCount: Annotated[int, Field(ge=0, le=2**32 - 1)]


class SignedBatch(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: BatchMessage
    results: list[ProbeResult]
    signature: Signature


class BatchAck(BaseModel):
    batch_id: str
    probe: str
    results: int
    duplicate: bool  # true when this exact batch was stored before: nothing new was written


# A GET /v1/batches cursor: opaque to the reader (this collector's own are the decimal storage
# sequence, monitor.ingest.feed), bounded so a peer cannot make us store anything large.
Cursor = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_.:-]{1,128}$")]


class BatchEntry(BaseModel):
    """One stored signed batch: ``body`` is the raw body exactly as the probe sent it (its UTF-8
    bytes hash, keccak256, to ``hash``), a JSON string so that no byte of it changes."""

    model_config = ConfigDict(strict=True)

    hash: Hash32
    body: str


class BatchPage(BaseModel):
    """``GET /v1/batches``: batches in the order this collector stored them, after ``since``.
    ``next`` is the cursor to ask with for the following ones (``since`` itself when the page is
    empty); ``more`` says whether a following page is ready now."""

    model_config = ConfigDict(strict=True)  # extra fields ignored: a newer peer may add some

    batches: list[BatchEntry]
    next: Cursor
    more: bool
