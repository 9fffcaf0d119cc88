"""Every error monitor raises on purpose, and the HTTP status the API gives it.

Hierarchy::

    MonitorError                      500 (never raised directly)
    ├── ConfigError                   bad settings, key file or registry file (CLI exits 2)
    │   ├── RegistryError             names the file, the entry and the field
    │   └── BundleError               `monitor verify`: the input is not a readable bundle
    ├── InvalidEvidence               409: a stored batch fails re-verification (attestations)
    ├── RequestError                  4xx: the client sent something we will not take
    │   ├── MalformedRequest          400/422: shape or content is wrong
    │   ├── BadSignature              401: signature does not recover to the claimed signer
    │   ├── Unauthorized              401: an admin request without the right bearer token
    │   ├── UnknownProbe              403: signer is not an active registered probe
    │   ├── AdminDisabled             403: an admin request while no admin token is set
    │   ├── NotFound                  404
    │   ├── BatchConflict             409: a batch id reused with different content
    │   ├── NoEvidence                409: nothing stored to attest for that period
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
