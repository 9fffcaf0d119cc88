"""EIP-712 signing and verification of probe batches and probe requests.

Two typed-data messages share one domain:

* ``ProbeBatch`` -- one signature per batch of results (``POST /v1/batches``); the results
  themselves are committed to by ``resultsHash`` (see monitor.signing.canonical).
* ``ProbeRequest`` -- authenticates ``GET /v1/targets``, whose endpoint URLs carry operators'
  API keys and so must only be served to registered probes.

The domain has no ``chainId`` or ``verifyingContract``: nothing is verified on chain, and a probe
key is only ever used for this service. The layout is specified in docs/signing.md.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature as EthKeysBadSignature
from eth_utils import to_checksum_address

from monitor.exceptions import BadSignature, ClockSkew, MalformedRequest
from monitor.ingest.schemas import BatchMessage, ProbeResult, SignedBatch
from monitor.signing.canonical import results_hash

DOMAIN: dict[str, str] = {"name": "monitor-probe", "version": "1"}

EIP712_DOMAIN_TYPE: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
]

# Same names and order as monitor.ingest.schemas.BatchMessage.
PROBE_BATCH_TYPE: list[dict[str, str]] = [
    {"name": "probe", "type": "address"},
    {"name": "batchId", "type": "string"},
    {"name": "createdAt", "type": "uint64"},
    {"name": "resultsHash", "type": "bytes32"},
    {"name": "resultCount", "type": "uint32"},
]

PROBE_REQUEST_TYPE: list[dict[str, str]] = [
    {"name": "probe", "type": "address"},
    {"name": "method", "type": "string"},
    {"name": "path", "type": "string"},
    {"name": "issuedAt", "type": "uint64"},
]

HEADER_PROBE = "X-Monitor-Probe"
HEADER_TIMESTAMP = "X-Monitor-Timestamp"
HEADER_SIGNATURE = "X-Monitor-Signature"

DEFAULT_MAX_SKEW_MS = 300_000

# secp256k1 group order; signatures with s > N/2 are the malleable twin of a low-s signature.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE_RE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,19}$")
_UINT64_MAX = 2**64 - 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _full_message(primary_type: str, fields: list[dict[str, str]], message: dict[str, Any]) -> dict:
    """Assemble an eth-account ``full_message`` for one of our primary types."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, primary_type: fields},
        "primaryType": primary_type,
        "domain": dict(DOMAIN),
        "message": message,
    }


def typed_data(message: Mapping[str, Any]) -> dict:
    """The ``full_message`` for a ``ProbeBatch`` (fields as in BatchMessage).

    ``resultsHash`` is converted from its ``0x`` hex form to 32 raw bytes: eth-account also takes
    a ``0x``-prefixed hex string, but an unprefixed one would be read as UTF-8 text and fail.
    """
    rh = message["resultsHash"]
    if isinstance(rh, str):
        if not rh.startswith(("0x", "0X")):
            raise ValueError("resultsHash must be 0x-prefixed hex")
        rh = bytes.fromhex(rh[2:])
    if not isinstance(rh, bytes | bytearray) or len(rh) != 32:
        raise ValueError("resultsHash must be 32 bytes")
    body = {
        "probe": message["probe"],
        "batchId": message["batchId"],
        "createdAt": int(message["createdAt"]),
        "resultsHash": bytes(rh),
        "resultCount": int(message["resultCount"]),
    }
    return _full_message("ProbeBatch", PROBE_BATCH_TYPE, body)


def request_typed_data(*, probe: str, method: str, path: str, issued_at_ms: int) -> dict:
    """The ``full_message`` for a ``ProbeRequest``; the method is signed upper-case."""
    body = {"probe": probe, "method": method.upper(), "path": path, "issuedAt": issued_at_ms}
    return _full_message("ProbeRequest", PROBE_REQUEST_TYPE, body)


def _sign(account: LocalAccount, full_message: dict) -> str:
    signed = account.sign_message(encode_typed_data(full_message=full_message))
    # bytes(...).hex() rather than HexBytes.hex(), whose 0x prefix changed between versions.
    return "0x" + bytes(signed.signature).hex()


def _recover(signable: SignableMessage, signature: str) -> str:
    """Checksum address that signed ``signable``; BadSignature on any malformed signature.

    Beyond what eth-account checks, only the canonical form is accepted (low s, v in {27, 28},
    which is what eth-account produces) so that a batch has exactly one valid signature string.
    """
    if not isinstance(signature, str) or not _SIGNATURE_RE.match(signature):
        raise BadSignature("signature must be 0x followed by 130 hex digits")
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    if v not in (27, 28):
        raise BadSignature(f"signature v must be 27 or 28, got {v}")
    if not 0 < s <= _SECP256K1_N // 2:
        raise BadSignature("signature s is not in the lower half of the curve order")
    try:
        address = Account.recover_message(signable, signature=raw)
    except (EthKeysBadSignature, ValueError, TypeError) as exc:
        # ValueError/TypeError: eth-account's own validation of r, s, v; eth_keys: no point.
        raise BadSignature(f"signature does not recover: {exc}") from exc
    return to_checksum_address(address)


def sign_batch(
    account: LocalAccount,
    results: list[ProbeResult],
    *,
    batch_id: str | None = None,
    created_at_ms: int | None = None,
) -> SignedBatch:
    """Sign ``results`` as one batch: one EIP-712 signature over the ``ProbeBatch`` message."""
    message = BatchMessage(
        probe=account.address,
        batchId=batch_id if batch_id is not None else uuid.uuid4().hex,
        createdAt=created_at_ms if created_at_ms is not None else _now_ms(),
        resultsHash=results_hash(results),
        resultCount=len(results),
    )
    signature = _sign(account, typed_data(message.model_dump()))
    return SignedBatch(message=message, results=list(results), signature=signature)


def recover_batch_signer(batch: SignedBatch) -> str:
    """Check the results against the message and return the checksum address that signed it.

    Raises MalformedRequest (``results_hash_mismatch`` / ``result_count_mismatch``) when the
    results are not the ones committed to, BadSignature when the signature does not recover.
    Does not compare with ``message.probe``; :func:`verify_batch` does.
    """
    msg = batch.message
    if msg.resultCount != len(batch.results):
        raise MalformedRequest(
            f"message.resultCount is {msg.resultCount} but the batch has "
            f"{len(batch.results)} results",
            code="result_count_mismatch",
        )
    computed = results_hash(batch.results)
    if computed != msg.resultsHash.lower():
        raise MalformedRequest(
            f"message.resultsHash {msg.resultsHash} does not match the results ({computed})",
            code="results_hash_mismatch",
        )
    signable = encode_typed_data(full_message=typed_data(msg.model_dump()))
    return _recover(signable, batch.signature)


def verify_batch(batch: SignedBatch) -> str:
    """:func:`recover_batch_signer`, then require the signer to be ``message.probe``."""
    signer = recover_batch_signer(batch)
    if signer.lower() != batch.message.probe.lower():
        raise BadSignature(
            f"batch signed by {signer}, not by the claimed probe {batch.message.probe}",
            code="bad_signature",
        )
    return signer


def auth_headers(
    account: LocalAccount, *, method: str, path: str, now_ms: int | None = None
) -> dict[str, str]:
    """Headers that authenticate one request (``method`` + URL ``path``, no query) as this probe."""
    issued_at = now_ms if now_ms is not None else _now_ms()
    full = request_typed_data(
        probe=account.address, method=method, path=path, issued_at_ms=issued_at
    )
    return {
        HEADER_PROBE: account.address,
        HEADER_TIMESTAMP: str(issued_at),
        HEADER_SIGNATURE: _sign(account, full),
    }


def _header_lookup(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased view of ``headers``; a header repeated with different values is refused.

    Iterating ``items()`` works for a plain dict and for starlette's Headers alike (the latter
    yields every raw header, duplicates included), so no case-sensitive ``get`` is relied on.
    """
    wanted = {HEADER_PROBE.lower(), HEADER_TIMESTAMP.lower(), HEADER_SIGNATURE.lower()}
    found: dict[str, str] = {}
    for key, value in headers.items():
        lk = key.lower()
        if lk not in wanted:
            continue
        if lk in found and found[lk] != value:
            raise BadSignature(f"header {key} given more than once")
        found[lk] = value
    return found


def verify_request_headers(
    headers: Mapping[str, str], *, method: str, path: str, now_ms: int, max_skew_ms: int
) -> str:
    """Checksum address of the probe that signed this request, or BadSignature / ClockSkew.

    The signature is checked before the clock so that ClockSkew is only ever reported to a
    correctly signed request, where it means "your clock is off", not "you are not a probe".
    """
    found = _header_lookup(headers)
    values: dict[str, str] = {}
    for name in (HEADER_PROBE, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        value = found.get(name.lower())
        if value is None or not value.strip():
            raise BadSignature(f"missing header {name}")
        values[name] = value.strip()

    probe = values[HEADER_PROBE]
    if not _ADDRESS_RE.match(probe):
        raise BadSignature(f"header {HEADER_PROBE} is not a 0x-prefixed 20-byte hex address")
    ts_text = values[HEADER_TIMESTAMP]
    if not _TIMESTAMP_RE.match(ts_text) or int(ts_text) > _UINT64_MAX:
        raise BadSignature(f"header {HEADER_TIMESTAMP} is not unix milliseconds")
    issued_at = int(ts_text)
    signature = values[HEADER_SIGNATURE]
    if not _SIGNATURE_RE.match(signature):
        raise BadSignature(f"header {HEADER_SIGNATURE} must be 0x followed by 130 hex digits")

    # The probe address is signed as it was sent; EIP-712 encodes addresses as 20 bytes, so its
    # letter case does not change the digest.
    full = request_typed_data(probe=probe, method=method, path=path, issued_at_ms=issued_at)
    try:
        signer = _recover(encode_typed_data(full_message=full), signature)
    except BadSignature as exc:
        raise BadSignature(f"header {HEADER_SIGNATURE}: {exc.message}") from exc
    if signer.lower() != probe.lower():
        raise BadSignature(
            f"header {HEADER_SIGNATURE} does not match {HEADER_PROBE} {probe} "
            "for this method, path and timestamp"
        )
    if abs(now_ms - issued_at) > max_skew_ms:
        raise ClockSkew(
            f"header {HEADER_TIMESTAMP} is {issued_at - now_ms} ms from the server clock "
            f"(allowed: ±{max_skew_ms} ms)"
        )
    return to_checksum_address(probe)
