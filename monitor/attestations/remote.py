"""``monitor attest cosign``: the two HTTP calls of a countersignature in one step
(docs/attestations.md, "Co-signed attestations").

1. ``GET {issuer}/v1/attestations/{id}``: the attestation, as the issuer serves it;
2. ``POST {collector}/v1/attestations/cosign`` with it (admin token of that collector): it
   recomputes the attestation from its own batches and answers its signature, or a 409 that
   names what differs;
3. ``POST {issuer}/v1/attestations/{id}/cosign`` with ``{signer, signature}``: the issuer checks
   the signature and stores it, so its bundle carries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from monitor.exceptions import ConfigError, CosignFailed
from monitor.safejson import loads

MAX_JSON_DEPTH = 32  # an attestation nests 6 levels
TIMEOUT_S = 120.0  # the countersigning collector recomputes the period from its batches
_ATTESTATION_PATH = re.compile(r"^(?P<base>.*)/v1/attestations/(?P<id>[0-9]+)(?:/bundle)?/?$")


@dataclass(frozen=True)
class Cosigned:
    issuer_url: str  # the attestation's URL at the issuer
    signer: str  # the countersigning collector's address
    signature: str
    collector_id: int  # the attestation's id at the countersigning collector
    countersigned_now: bool  # False: that collector had countersigned it before
    stored_now: bool  # False: the issuer already had this cosignature


def split_attestation_url(url: str) -> tuple[str, int]:
    """``https://a.example/v1/attestations/7`` -> (``https://a.example``, 7); ConfigError
    (exit 2) for anything else."""
    parts = urlsplit(url)
    match = _ATTESTATION_PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or match is None:
        raise ConfigError(
            f"--from {url!r}: give the http(s) URL of an attestation, "
            "https://collector.example/v1/attestations/ID"
        )
    base = urlunsplit((parts.scheme, parts.netloc, match["base"], "", ""))
    return base, int(match["id"])


def _call(client: httpx.Client, method: str, url: str, what: str, **kwargs: Any) -> tuple[int, Any]:
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise CosignFailed(f"{what}: {url}: {type(exc).__name__}: {exc}") from None
    try:
        # another collector's answer: never parsed deeper than an attestation nests
        body = loads(response.content, max_depth=MAX_JSON_DEPTH)
    except ValueError:
        body = None
    if response.status_code >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            detail = f"{error.get('code')}: {error.get('message')}"
        else:
            detail = response.text[:300]
        raise CosignFailed(f"{what}: {url}: HTTP {response.status_code}: {detail}")
    if not isinstance(body, dict):
        raise CosignFailed(f"{what}: {url}: the answer is not a JSON object")
    return response.status_code, body


def cosign_remote(
    source: str, collector: str, *, admin_token: str, timeout_s: float = TIMEOUT_S
) -> Cosigned:
    """Fetch the attestation at ``source``, have ``collector`` countersign it, post the
    countersignature back to the issuer. CosignFailed (exit 1) names the step that failed."""
    base, attestation_id = split_attestation_url(source)
    url = f"{base}/v1/attestations/{attestation_id}"
    collector = collector.rstrip("/")
    with httpx.Client(timeout=timeout_s) as client:
        _, attestation = _call(client, "GET", url, "reading the attestation")
        status, signed = _call(
            client,
            "POST",
            f"{collector}/v1/attestations/cosign",
            "countersigning",
            json=attestation,
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        try:
            cosignature = {"signer": signed["signer"], "signature": signed["signature"]}
            collector_id = int(signed["attestation_id"])
        except (KeyError, TypeError, ValueError):
            raise CosignFailed(
                f"countersigning: {collector}: the answer has no signer, signature and "
                "attestation_id"
            ) from None
        stored, _ = _call(
            client, "POST", f"{url}/cosign", "storing the cosignature", json=cosignature
        )
    return Cosigned(
        issuer_url=url,
        signer=cosignature["signer"],
        signature=cosignature["signature"],
        collector_id=collector_id,
        countersigned_now=status == 201,
        stored_now=stored == 201,
    )
