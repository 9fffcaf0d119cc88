"""Check an attestation bundle offline (``monitor verify``, docs/attestations.md): the service
signature and the other collectors' cosignatures (how many distinct ones, how many registered, a
threshold), the Merkle root over the batches, every probe batch signature, the figures
recomputed from the batches, the policy hash and the recommendation. Pure functions returning
checks; the CLI prints them. Only loading a bundle from a URL touches the network."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ValidationError

from monitor.attestations.evidence import evaluate_evidence
from monitor.attestations.merkle import hex_root
from monitor.attestations.message import (
    AttestationMessage,
    RecommendationStruct,
    figures_struct,
    recommendation_struct,
    sorted_probes,
    targets_of,
    verdicts_of,
    verdicts_struct,
)
from monitor.attestations.schemas import BundleOut
from monitor.exceptions import BadSignature, BundleError, InvalidEvidence, MalformedRequest
from monitor.ingest.service import batch_hash, parse_batch
from monitor.signing.collector import COLLECTOR_DOMAIN, SIGNED_TYPES, recover_signer
from monitor.signing.eip712 import EIP712_DOMAIN_TYPE, verify_batch
from monitor.sla.penalties import PenaltyPolicy, recommend

FETCH_TIMEOUT_S = 60.0
MAX_UNIX_S = 253_402_300_799  # the end of year 9999, the last second a datetime holds


@dataclass(frozen=True)
class Check:
    ok: bool
    text: str

    @property
    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.text}"


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


# --- loading ------------------------------------------------------------------------------------


def bundle_url(url: str) -> str:
    """``…/v1/attestations/{id}`` (or its ``/bundle``) -> the bundle's URL."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith("/bundle"):
        path += "/bundle"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def load_bundle(source: str, *, timeout_s: float = FETCH_TIMEOUT_S) -> BundleOut:
    """A bundle from a file (as saved from ``/bundle``) or from an http(s) URL of an
    attestation; BundleError when it cannot be read or is not a bundle."""
    if source.startswith(("http://", "https://")):
        url = bundle_url(source)
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise BundleError(f"{url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise BundleError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
        raw = response.content
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise BundleError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        return BundleOut.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise BundleError(f"{source}: not an attestation bundle: {where}: {first['msg']}") from None


# --- the checks ---------------------------------------------------------------------------------


def _message(typed: dict[str, Any], out: list[Check]) -> AttestationMessage | None:
    wrong = []
    if typed.get("domain") != COLLECTOR_DOMAIN:
        wrong.append(f"domain is {typed.get('domain')!r}, not {COLLECTOR_DOMAIN}")
    if typed.get("primaryType") != "Attestation":
        wrong.append(f"primaryType is {typed.get('primaryType')!r}, not 'Attestation'")
    if typed.get("types") != {"EIP712Domain": EIP712_DOMAIN_TYPE, **SIGNED_TYPES["Attestation"]}:
        wrong.append("types are not the documented Attestation types")
    message = None
    try:
        message = AttestationMessage.model_validate(typed.get("message"))
    except ValidationError as exc:
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e["loc"])
            wrong.append(f"message.{where}: {e['msg']}")
    out.extend(Check(False, f"typed data: {w}") for w in wrong)
    if not wrong:
        out.append(Check(True, "typed data: domain monitor-collector v1, the Attestation types"))
    return message


def _own_typed_data(bundle: BundleOut) -> dict[str, Any]:
    """The document's message in our own copy of the types and the domain."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **SIGNED_TYPES["Attestation"]},
        "primaryType": "Attestation",
        "domain": dict(COLLECTOR_DOMAIN),
        "message": bundle.attestation.typed_data.get("message"),
    }


def _recover(full: dict[str, Any], signature: str) -> tuple[str | None, str]:
    """(signer, "") or (None, why not)."""
    try:
        return recover_signer(full, signature), ""
    except BadSignature as exc:
        return None, exc.message
    except Exception as exc:  # eth-account on a message that does not fit the types
        return None, f"the message cannot be encoded: {exc}"


def _signature(bundle: BundleOut, pinned: str | None, out: list[Check]) -> str | None:
    """Check the issuer's signature; returns its signer when it is the attestation's."""
    attestation = bundle.attestation
    signer, why = _recover(_own_typed_data(bundle), attestation.signature)
    if signer is None:
        out.append(Check(False, f"signature: {why}"))
        return None
    valid = signer.lower() == attestation.signer.lower()
    if not valid:
        out.append(
            Check(
                False,
                f"signature: the typed data recovers to {signer}, not to the attestation's "
                f"signer {attestation.signer}: the typed data or the signature was altered",
            )
        )
    elif pinned is None:
        out.append(
            Check(
                True,
                f"signature: signed by {signer}, the attestation's signer (not pinned: pass "
                "--signer with the address of GET /v1/identity)",
            )
        )
    else:
        out.append(Check(True, f"signature: signed by {signer}, the attestation's signer"))
    if pinned is not None:
        same = signer.lower() == pinned.lower()
        text = "is the pinned --signer" if same else f"is not the pinned --signer {pinned}"
        out.append(Check(same, f"signer: {signer} {text}"))
    return signer if valid else None


def _cosigners(
    bundle: BundleOut,
    issuer: str | None,
    collectors: Sequence[str] | None,
    threshold: int | None,
    out: list[Check],
) -> None:
    """Every cosignature over the same typed data; how many distinct collectors signed, how many
    of them are registered (``collectors``), and the threshold of registered ones."""
    full = _own_typed_data(bundle)
    signers = [issuer] if issuer is not None else []
    for cosignature in bundle.attestation.cosignatures:
        signer, why = _recover(full, cosignature.signature)
        if signer is None:
            out.append(Check(False, f"cosignature of {cosignature.signer}: {why}"))
        elif signer.lower() != cosignature.signer.lower():
            out.append(
                Check(
                    False,
                    f"cosignature of {cosignature.signer}: it recovers to {signer} over the "
                    "typed data: the typed data or the cosignature was altered",
                )
            )
        else:
            signers.append(signer)
    distinct = list(dict.fromkeys(to_checksum_address(s) for s in signers))
    registered = {c.lower() for c in collectors or ()}
    counted = [s for s in distinct if s.lower() in registered]
    who = ", ".join(f"{s}{' (issuer)' if s == issuer else ''}" for s in distinct) or "none"
    plural = "collector" if len(distinct) == 1 else "collectors"
    if collectors:
        of = f"{len(counted)} of them registered (of the {len(registered)} --collector given)"
    else:
        of = "none counted as registered (no --collector given)"
    out.append(Check(True, f"signers: {len(distinct)} distinct {plural} signed: {who}; {of}"))
    if threshold is not None:
        out.append(
            Check(
                len(counted) >= threshold,
                f"threshold: {len(counted)} distinct registered collectors signed, "
                f"{threshold} required",
            )
        )


def _root(bundle: BundleOut, message: AttestationMessage, out: list[Check]) -> list[str]:
    hashes = [batch_hash(body.encode()) for body in bundle.batches]
    for digest, n in Counter(hashes).items():
        if n > 1:
            out.append(Check(False, f"bundle: batch {digest} is given {n} times"))
    root = hex_root(hashes)
    count = len(set(hashes))
    if root != message.evidenceRoot:
        out.append(
            Check(
                False,
                f"evidence root: the {count} batches hash to the root {root}, the attestation "
                f"says {message.evidenceRoot}",
            )
        )
    if count != message.batchCount:
        out.append(
            Check(
                False,
                f"batch count: the attestation says {message.batchCount} batches, the bundle "
                f"has {count}",
            )
        )
    if root == message.evidenceRoot and count == message.batchCount:
        out.append(Check(True, f"evidence root {root} over the {count} batches"))
    return hashes


def _batches(
    bundle: BundleOut, hashes: list[str], message: AttestationMessage, out: list[Check]
) -> list[str]:
    attested = {p.lower() for p in message.probes}
    valid, bad = [], 0
    for body, digest in zip(bundle.batches, hashes, strict=True):
        try:
            signer = verify_batch(parse_batch(body.encode()))
        except (MalformedRequest, BadSignature) as exc:
            out.append(Check(False, f"batch {digest}: the probe signature fails: {exc.message}"))
            bad += 1
            continue
        if signer.lower() not in attested:
            out.append(
                Check(False, f"batch {digest}: signed by {signer}, not one of the attested probes")
            )
            bad += 1
            continue
        valid.append(body)
    if not bad:
        out.append(
            Check(
                True,
                f"probe signatures: all {len(valid)} batches verify, each signed by one of the "
                f"{len(attested)} attested probes",
            )
        )
    return valid


def _figures(valid: list[str], message: AttestationMessage, total: int, out: list[Check]) -> None:
    period = message.period
    if period.start % 60 or period.end % 60 or not period.start < period.end <= MAX_UNIX_S:
        out.append(
            Check(False, f"period: [{period.start}, {period.end}) is not whole minutes in order")
        )
        return
    if message.probes != sorted_probes(message.probes):
        out.append(Check(False, "probes: not distinct EIP-55 addresses sorted by value"))
    try:
        evidence = evaluate_evidence(
            valid,
            operator_id=message.subject.operatorId,
            chain_id=message.subject.chainId,
            start=datetime.fromtimestamp(period.start, UTC),
            end=datetime.fromtimestamp(period.end, UTC),
            targets=targets_of(message.targets),
            probes=message.probes,
        )
    except InvalidEvidence as exc:
        out.append(Check(False, f"figures: {exc.message}"))
        return
    basis = "" if len(valid) == total else f" (of the {len(valid)} batches that verify)"
    recomputed = figures_struct(
        evidence.figures, longest_outage_minutes=evidence.longest_outage_minutes
    )
    verdicts = verdicts_struct(evidence.figures.verdicts)
    wrong = [
        f"{what} differ from the evidence{basis}: "
        + ", ".join(f"{name} {theirs} (recomputed {ours})" for name, theirs, ours in diffs)
        for what, diffs in (
            ("figures", _differences(message.figures, recomputed)),
            ("verdicts", _differences(message.verdicts, verdicts)),
        )
        if diffs
    ]
    if [p.lower() for p in evidence.probes] != [p.lower() for p in message.probes]:
        wrong.append(f"probes: the evidence{basis} has results of {list(evidence.probes)}")
    wrong += [
        f"batch {h} has no result of the subject in the period" for h in evidence.idle_batches
    ]
    out.extend(Check(False, w) for w in wrong)
    if not wrong:
        f = recomputed
        out.append(
            Check(
                True,
                f"figures recomputed from the evidence{basis}: {f.totalMinutes} minutes, "
                f"{f.up} up, {f.down} down, {f.insufficient} insufficient; availability "
                f"{f.availabilityPpm} ppm, latency p95 {f.latencyP95Ms} ms, correctness "
                f"{f.correctnessPpm} ppm; verdicts: "
                + ", ".join(f"{k} {v}" for k, v in verdicts.model_dump().items()),
            )
        )


def _differences(attested: BaseModel, recomputed: BaseModel) -> list[tuple[str, Any, Any]]:
    return [
        (name, getattr(attested, name), getattr(recomputed, name))
        for name in type(attested).model_fields
        if getattr(attested, name) != getattr(recomputed, name)
    ]


def _policy(bundle: BundleOut, message: AttestationMessage, out: list[Check]) -> None:
    served = bundle.attestation.policy
    canonical = json.dumps(served, sort_keys=True, separators=(",", ":"))
    digest = "0x" + keccak(text=canonical).hex()
    if digest != message.policyHash:
        out.append(
            Check(
                False, f"policy: it hashes to {digest}, the attestation says {message.policyHash}"
            )
        )
        return
    try:
        policy = PenaltyPolicy.model_validate(served)
    except ValidationError as exc:
        out.append(Check(False, f"policy: not a penalty policy: {exc.errors()[0]['msg']}"))
        return
    if policy.canonical() != canonical:
        out.append(Check(False, "policy: not complete (its canonical form differs)"))
        return
    out.append(Check(True, f"policy hash {digest}"))
    attested = message.recommendation
    recomputed = recommendation_struct(
        recommend(
            verdicts=verdicts_of(message.verdicts),
            longest_outage_minutes=message.figures.longestOutageMinutes,
            previous={v.kind for v in attested.violations if v.repeated},
            policy=policy,
        )
    )
    if recomputed != attested:
        out.append(
            Check(
                False,
                f"recommendation: the policy gives {_advice(recomputed)}, the attestation says "
                f"{_advice(attested)}",
            )
        )
        return
    out.append(Check(True, f"recommendation recomputed: {_advice(attested)}"))


def _advice(r: RecommendationStruct) -> str:
    kinds = ", ".join(
        f"{v.kind} ({'repeated' if v.repeated else 'first'}, {v.penaltyBps} bps)"
        for v in r.violations
    )
    return f"{kinds or 'no violation'}; {r.penaltyBps} bps in all"


def verify_bundle(
    bundle: BundleOut,
    *,
    signer: str | None = None,
    collectors: Sequence[str] | None = None,
    threshold: int | None = None,
) -> list[Check]:
    """Every check, in order; the bundle is verified when none failed. ``signer``: the
    collector address to require (pinned from GET /v1/identity). ``collectors``: the registered
    collectors' addresses; with ``threshold``, at least that many of them must have signed
    (issuer or cosigner). The signers are reported when the bundle has cosignatures or either
    is given."""
    out: list[Check] = []
    message = _message(bundle.attestation.typed_data, out)
    issuer = _signature(bundle, signer, out)
    if bundle.attestation.cosignatures or collectors or threshold is not None:
        _cosigners(bundle, issuer, collectors, threshold, out)
    if message is None:
        return out  # nothing else can be read from a message that does not parse
    hashes = _root(bundle, message, out)
    valid = _batches(bundle, hashes, message, out)
    _figures(valid, message, len(bundle.batches), out)
    _policy(bundle, message, out)
    return out


def describe(bundle: BundleOut) -> str:
    """One line naming the attestation, for the top of the report."""
    message = bundle.attestation.typed_data.get("message")
    try:
        m = AttestationMessage.model_validate(message)
    except ValidationError:
        return f"attestation {bundle.attestation.id} (unreadable message)"

    def when(seconds: int) -> str:
        if seconds > MAX_UNIX_S:
            return str(seconds)
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")

    return (
        f"attestation {bundle.attestation.id}: operator {m.subject.operatorId} on chain "
        f"{m.subject.chainId}, [{when(m.period.start)}, {when(m.period.end)}), "
        f"{len(bundle.batches)} batches"
    )
