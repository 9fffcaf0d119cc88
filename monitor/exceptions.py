"""Every error monitor raises on purpose, and the HTTP status the API gives it.

Hierarchy::

    MonitorError                      500 (never raised directly)
    ├── ConfigError                   bad settings, key file or registry file (CLI exits 2)
    │   ├── RegistryError             names the file, the entry and the field
    │   │   └── GovernanceError       a registry without k valid governance signatures
    │   └── BundleError               `monitor verify`: the input is not a readable bundle
    ├── InvalidEvidence               409: a stored batch fails re-verification (attestations)
    ├── PeerError                     peer sync: a peer's GET /v1/batches page is not usable
    ├── AnswerRejected                monitor.client: one collector's weights are not counted
    ├── QuorumNotReached              monitor.client: too few valid, agreeing collectors (exit 1)
    ├── CosignFailed                  `monitor attest cosign`: a collector refused (exit 1)
    ├── RequestError                  4xx: the client sent something we will not take
    │   ├── MalformedRequest          400/422: shape or content is wrong
    │   ├── BadSignature              401: signature does not recover to the claimed signer
    │   ├── Unauthorized              401: an admin request without the right bearer token
    │   ├── UnknownProbe              403: signer is not an active registered probe
    │   ├── UnknownCollector          403: an attestation signer the registry does not list
    │   ├── AdminDisabled             403: an admin request while no admin token is set
    │   ├── NotFound                  404
    │   ├── BatchConflict             409: a batch id reused with different content
    │   ├── NoEvidence                409: nothing stored to attest for that period
    │   ├── AttestationMismatch       409: recomputed here, the attestation differs
    │   ├── TooManyCosignatures       409: an attestation has all the cosignatures it may
    │   ├── PayloadTooLarge           413
    │   └── ClockSkew                 422: a batch or request dated in the future
    └── RpcError                      probe side: an operator's JSON-RPC answer was not usable
        ├── RpcUnavailable            timeout, transport, HTTP status, JSON-RPC error object
        └── RpcMalformed              an answer that is not valid JSON-RPC or has the wrong type
            └── RpcTooLarge           larger than the size cap: malformed, but proves no lie

Each error has a stable ``code`` (snake_case); the API answers
``{"error": {"code": ..., "message": ...}}`` with it.
"""

from __future__ import annotations


class MonitorError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(MonitorError):
    code = "config_error"


class RegistryError(ConfigError):
    code = "registry_invalid"


class GovernanceError(RegistryError):
    """Fewer valid approvals of the registry's hash than the governance threshold: refused, and
    the registry in force is kept (docs/governance.md)."""

    code = "registry_not_approved"


class RequestError(MonitorError):
    status_code = 400
    code = "bad_request"


class MalformedRequest(RequestError):
    status_code = 422
    code = "malformed"


class BadSignature(RequestError):
    status_code = 401
    code = "bad_signature"


class UnknownProbe(RequestError):
    status_code = 403
    code = "unknown_probe"


class NotFound(RequestError):
    status_code = 404
    code = "not_found"


class BatchConflict(RequestError):
    status_code = 409
    code = "batch_conflict"


class PayloadTooLarge(RequestError):
    status_code = 413
    code = "payload_too_large"


class ClockSkew(RequestError):
    status_code = 422
    code = "clock_skew"


class RpcError(MonitorError):
    """Raised by monitor.rpc; ``kind`` is the result's error kind (see ingest.schemas.ErrorKind)."""

    kind = "transport"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class RpcUnavailable(RpcError):
    kind = "transport"


class RpcMalformed(RpcError):
    kind = "malformed"


class RpcTooLarge(RpcMalformed):
    """An answer over the size cap. Malformed for the head and block checks (a block header is
    small), but a check whose honest answer can be large (eth_getLogs) leaves it unjudged."""


class BundleError(ConfigError):
    """The input of ``monitor verify`` is not a readable bundle (exit 2)."""

    code = "bad_bundle"


class InvalidEvidence(MonitorError):
    """A batch that cannot count as evidence: not a batch, a signature that does not verify, a
    signer that is not one of the given probes, or a probe's batch given twice."""

    status_code = 409
    code = "invalid_evidence"


class Unauthorized(RequestError):
    status_code = 401
    code = "unauthorized"


class AdminDisabled(RequestError):
    status_code = 403
    code = "admin_disabled"


class NoEvidence(RequestError):
    status_code = 409
    code = "no_evidence"


class UnknownCollector(RequestError):
    """A signature on an attestation by a key the registry in force does not list among its
    collectors (only checked when the registry lists collectors)."""

    status_code = 403
    code = "unknown_collector"


class AttestationMismatch(RequestError):
    """Asked to countersign, this collector recomputed the attestation from its own copy of the
    evidence and reached another message; the message names the first fields that differ."""

    status_code = 409
    code = "attestation_mismatch"


class TooManyCosignatures(RequestError):
    status_code = 409
    code = "too_many_cosignatures"


class CosignFailed(MonitorError):
    """``monitor attest cosign``: the issuer or the countersigning collector could not be read or
    refused (the message says which, and why)."""

    code = "cosign_failed"


class AnswerRejected(MonitorError):
    """monitor.client: a collector's weights that do not count; ``code`` is the reason
    (unreachable, http_error, malformed, bad_signature, unknown_signer, ...)."""

    code = "malformed"


class QuorumNotReached(MonitorError):
    """monitor.client: fewer than the quorum of collectors gave valid weights, or agreed with
    their median; ``reports`` says what each collector did (monitor.client.CollectorReport)."""

    code = "quorum_not_reached"

    def __init__(self, message: str, *, reports: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.reports = reports


class PeerError(MonitorError):
    """monitor.ingest.sync: a peer could not be read this tick (logged, counted, retried next
    tick; nothing of the page is stored). ``code``: peer_unreachable (transport, timeout),
    peer_http_status (not a 200), peer_too_large (over the size cap), peer_malformed (not a
    page of batches)."""

    code = "peer_unreachable"
