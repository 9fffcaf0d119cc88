"""Ask k collectors for a chain's weights at once, keep only what their pinned keys signed, and
combine (monitor.client.combine). Async, over httpx; nothing else of monitor is needed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import httpx
from eth_utils import is_address

from monitor.client.combine import (
    DEFAULT_MAX_SKEW_MS,
    DEFAULT_TOLERANCE_BPS,
    CombinedWeights,
    Outcome,
    combine,
)
from monitor.client.verify import SignedWeights, verify_answer
from monitor.exceptions import AnswerRejected, ConfigError
from monitor.safejson import json_depth, loads

DEFAULT_TIMEOUT_S = 5.0
HASH = re.compile(r"0x[0-9a-fA-F]{64}")
# A weights answer is ~150 bytes per endpoint: 4 MiB is tens of thousands of endpoints, and a
# hostile collector cannot make the router buffer more.
MAX_BODY_BYTES = 4 * 1024 * 1024


# A hostile collector must not crash a router (monitor.safejson): nesting is capped before
# parsing (an answer needs 3 levels, identity 5).
MAX_DEPTH = 16


def default_quorum(collectors: int) -> int:
    """A strict majority of the collectors given."""
    return collectors // 2 + 1


async def _read(response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """At most ``limit`` bytes of the body: beyond it, AnswerRejected, or (``cut``) the first
    ``limit`` bytes."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise AnswerRejected(f"answer larger than {limit} bytes")
    return bytes(body)


def _http_error(status: int, body: bytes) -> AnswerRejected:
    detail = body[:300].decode("utf-8", "replace")
    try:
        # an error body is as hostile as any
        error = loads(body, max_depth=MAX_DEPTH)["error"]  # {"error": {"code", "message"}}
        detail = f"{error['code']}: {error['message']}"[:300]
    except (ValueError, KeyError, TypeError):
        pass
    return AnswerRejected(f"HTTP {status} {detail}", code="http_error")


async def _get_json(
    client: httpx.AsyncClient, url: str, params: dict[str, str | int], timeout_s: float
) -> object:
    try:
        # httpx's timeout is per read; this one bounds the whole answer (a slow trickle too).
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", url, params=params) as response:
                if response.status_code != 200:
                    error = await _read(response, 64 * 1024, cut=True)
                    raise _http_error(response.status_code, error)
                body = await _read(response, MAX_BODY_BYTES)
    except (TimeoutError, httpx.TimeoutException):
        raise AnswerRejected(f"no answer within {timeout_s:g} s", code="unreachable") from None
    except httpx.HTTPError as exc:
        raise AnswerRejected(f"{type(exc).__name__}: {exc}", code="unreachable") from None
    if json_depth(body) > MAX_DEPTH:
        raise AnswerRejected(f"the answer is not JSON nested at most {MAX_DEPTH} deep")
    try:
        return json.loads(body)
    except ValueError:
        raise AnswerRejected("the answer is not JSON") from None


async def _identity(
    client: httpx.AsyncClient, base: str, timeout_s: float
) -> tuple[str, str | None]:
    """The address a collector announces, and the hash of the registry it applied."""
    try:
        body = await _get_json(client, f"{base}/v1/identity", {}, timeout_s)
    except AnswerRejected as exc:
        raise AnswerRejected(f"/v1/identity: {exc.message}", code="no_identity") from None
    if not isinstance(body, dict):
        raise AnswerRejected("/v1/identity has no address", code="no_identity")
    address = body.get("address")
    if not isinstance(address, str) or not is_address(address):
        raise AnswerRejected("/v1/identity has no address", code="no_identity")
    registry = body.get("registry")
    found = registry.get("hash") if isinstance(registry, dict) else None
    registry_hash = found.lower() if isinstance(found, str) and HASH.fullmatch(found) else None
    return address, registry_hash


async def fetch_one(
    client: httpx.AsyncClient,
    base: str,
    *,
    chain_id: int,
    window: str | None,
    signers: frozenset[str] | None,
    timeout_s: float,
) -> Outcome:
    """One collector's verified answer, or why it does not count. With ``signers`` (lowercase
    addresses) the signature must recover to one of them; without, to the address the
    collector's own ``/v1/identity`` announces (which proves only that the answer was not
    altered on the way: a forger answers both)."""
    params: dict[str, str | int] = {"chain_id": chain_id}
    if window is not None:
        params["window"] = window
    weights = _get_json(client, f"{base}/v1/weights", params, timeout_s)
    try:
        # Both to their end (gather would leave the other running on a first error); the
        # weights' failure is the one reported. The identity gives the registry hash always,
        # and the trusted address when nothing is pinned.
        got = await asyncio.gather(
            weights, _identity(client, base, timeout_s), return_exceptions=True
        )
        body, identity = got
        if isinstance(body, BaseException):
            raise body
        registry_hash = None
        if isinstance(identity, BaseException):
            if signers is None or not isinstance(identity, AnswerRejected):
                raise identity
            trusted = signers  # pinned: the identity is only needed for the registry hash
        else:
            announced, registry_hash = identity
            trusted = signers if signers is not None else frozenset({announced.lower()})
        answer: SignedWeights = verify_answer(body, chain_id=chain_id, window=window)
        answer = dataclasses.replace(answer, registry_hash=registry_hash)
        if answer.signer.lower() not in trusted:
            whom = (
                "a pinned collector"
                if signers is not None
                else "the address /v1/identity announces"
            )
            raise AnswerRejected(
                f"signature recovers to {answer.signer}, not {whom}: the weights were altered "
                "or signed by another key",
                code="unknown_signer",
            )
        return answer
    except AnswerRejected as exc:
        return exc


def _bases(collectors: Sequence[str]) -> list[str]:
    bases: list[str] = []
    for url in collectors:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"collector {url!r} is not an http(s) URL")
        base = url.rstrip("/")
        if base in bases:
            raise ConfigError(f"collector {url} is given twice: each collector counts once")
        bases.append(base)
    if not bases:
        raise ConfigError("no collector given")
    return bases


def _pins(signers: Iterable[str] | None) -> frozenset[str] | None:
    if signers is None:
        return None
    pins = list(signers)
    for address in pins:
        if not is_address(address):
            raise ConfigError(f"signer {address!r} is not an address (0x + 40 hex digits)")
    if not pins:
        raise ConfigError("signers is empty: no answer could be accepted")
    return frozenset(a.lower() for a in pins)


async def fetch_weights(
    collectors: Sequence[str],
    *,
    chain_id: int,
    window: str | None = None,
    signers: Iterable[str] | None = None,
    quorum: int | None = None,
    tolerance_bps: int = DEFAULT_TOLERANCE_BPS,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    registry_hash: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> CombinedWeights:
    """The weights of ``chain_id`` as the collectors (base URLs) agree on them.

    Each collector is asked concurrently, within ``timeout_s``; its answer counts only if its
    EIP-712 signature recovers to one of ``signers`` (pin them: the governance registry's
    collectors) or, without pins, to the address its ``/v1/identity`` announces. ``quorum``
    (default: a strict majority of ``collectors``) valid answers within ``tolerance_bps`` of the
    combination are needed, else QuorumNotReached, whose ``reports`` say what each collector
    did. ``registry_hash`` pins the registry (its hash, `monitor registry hash`): a collector
    that applied another is excluded; without it, one whose registry differs from the one most
    answers come from is. Bad arguments: ConfigError. ``client``: a caller's own httpx client
    (proxies, TLS);
    by default one is made and closed here.
    """
    bases = _bases(collectors)
    pins = _pins(signers)
    quorum = default_quorum(len(bases)) if quorum is None else quorum
    if not 1 <= quorum <= len(bases):
        raise ConfigError(f"quorum {quorum} is not between 1 and the {len(bases)} collectors")
    if pins is not None and quorum > len(pins):
        raise ConfigError(f"quorum {quorum} cannot be met by {len(pins)} pinned signer(s)")
    if not 0 < chain_id < 2**63:
        raise ConfigError(f"chain id {chain_id} is out of range")
    if registry_hash is not None and not HASH.fullmatch(registry_hash):
        raise ConfigError(f"registry hash {registry_hash!r} is not 0x + 64 hex digits")
    if tolerance_bps < 0 or max_skew_ms < 0 or timeout_s <= 0:
        raise ConfigError("tolerance, skew and timeout must not be negative (timeout above 0)")
    own = client is None
    # Redirects are not followed: each answer is reported under the URL that gave it.
    http = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
    try:
        outcomes = await asyncio.gather(
            *(
                fetch_one(
                    http, b, chain_id=chain_id, window=window, signers=pins, timeout_s=timeout_s
                )
                for b in bases
            )
        )
    finally:
        if own:
            await http.aclose()
    return combine(
        list(zip(bases, outcomes, strict=True)),
        chain_id=chain_id,
        window=window,
        quorum=quorum,
        tolerance_bps=tolerance_bps,
        max_skew_ms=max_skew_ms,
        registry_hash=registry_hash.lower() if registry_hash is not None else None,
    )
