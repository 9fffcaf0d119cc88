"""GET /v1/scores and /v1/weights: served from the latest stored run, never from raw results;
each answer is kept in memory as its JSON bytes per run (monitor.scoring.answers)."""

from __future__ import annotations

import json
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from monitor.db.models import Chain, Endpoint, ScoringRun
from monitor.db.session import session_scope
from monitor.exceptions import NotFound, RequestError
from monitor.registry.service import public_url
from monitor.scoring.answers import CHANGES, AnswerCache, latest_run_token
from monitor.scoring.schemas import (
    EndpointScore,
    EndpointWeight,
    ProbeAgreement,
    ProbesOut,
    ScoresOut,
    WeightsOut,
)
from monitor.scoring.service import latest_run, run_probe_scores, run_scores
from monitor.settings import parse_window
from monitor.signing.collector import sign_typed, weights_typed_data

router = APIRouter(tags=["reputation"])


class ScoresNotReady(RequestError):
    status_code = 503
    code = "scores_not_ready"


def _window(request: Request, window: str | None) -> str:
    windows: list[str] = request.app.state.settings.windows
    window = window or windows[0]
    if window not in windows:
        raise RequestError(
            f"window {window!r} is not computed; available: {', '.join(windows)}",
            code="unknown_window",
        )
    return window


def _latest(session: Session, chain_id: int, window: str) -> ScoringRun:
    chain = session.get(Chain, chain_id)
    if chain is None or not chain.active:
        # A chain removed from the registry must stop receiving traffic at once, not serve
        # its last weights until they age out.
        state = "not in" if chain is None else "deactivated in"
        raise NotFound(f"chain {chain_id} is {state} the registry", code="unknown_chain")
    run = latest_run(session, chain_id=chain_id, window_s=parse_window(window))
    if run is None:
        raise ScoresNotReady(f"no scores computed yet for chain {chain_id}; retry shortly")
    return run


def _scores(session: Session, chain_id: int, window: str, run: ScoringRun) -> ScoresOut:
    urls: dict[int, str] = {
        row.id: row.url
        for row in session.execute(
            select(Endpoint.id, Endpoint.url).where(Endpoint.chain_id == chain_id)
        )
    }
    scores = [
        EndpointScore(
            endpoint_id=s.endpoint_id,
            operator_id=s.operator_id,
            endpoint=public_url(urls[s.endpoint_id]),
            availability=s.availability,
            latency_p50_ms=s.latency_p50_ms,
            latency_p95_ms=s.latency_p95_ms,
            lag_blocks=s.lag_blocks,
            lag_seconds=s.lag_seconds,
            correctness=s.correctness,
            samples=s.samples,
            probes=s.probes,
            score=s.score,
            weight=s.weight,
            weight_bps=s.weight_bps,
            status=s.status,
            status_since=s.status_since,
            reasons=json.loads(s.reasons),
            errors=json.loads(s.errors),
            factors=json.loads(s.factors),
        )
        for s in run_scores(session, run_id=run.id)
    ]
    return ScoresOut(chain_id=chain_id, window=window, as_of=run.as_of, scores=scores)


Build = Callable[[Session, ScoringRun, str], bytes]  # session, run, window -> answer
REBUILD_ATTEMPTS = 3  # a replay replaces a run in one transaction: the next read sees the new one


def _answer(request: Request, kind: str, chain_id: int, window: str, build: Build) -> bytes:
    """The answer's bytes: checked against the database (one query), rebuilt by ``build`` only
    when the latest run is not the one the stored answer was built from."""
    answers: AnswerCache = request.app.state.answers
    key = (kind, chain_id, window)
    for _ in range(REBUILD_ATTEMPTS):
        changes = CHANGES.value  # before the query: a commit after it leaves the answer unfresh
        with session_scope(request.app.state.engine) as session:
            token = latest_run_token(session, chain_id=chain_id, window_s=parse_window(window))
            if token is None or not token[0]:
                # A chain removed from the registry must stop receiving traffic at once, not
                # serve its last weights until they age out.
                state = "not in" if token is None else "deactivated in"
                raise NotFound(f"chain {chain_id} is {state} the registry", code="unknown_chain")
            run_id = token[1]
            if run_id == 0:
                raise ScoresNotReady(f"no scores computed yet for chain {chain_id}; retry shortly")
            body = answers.revalidated(key, run_id, changes)
            if body is not None:
                return body
            # The scoring job replaces the runs it replays (late data): the latest run may be
            # deleted between these statements. A run still there after its scores were read
            # was there, with all of them (one transaction), while they were read.
            run = session.get(ScoringRun, run_id)
            if run is None:
                continue
            body = build(session, run, window)
            if session.scalar(select(ScoringRun.id).where(ScoringRun.id == run_id)) is None:
                continue
            answers.store(key, run_id, changes, body)
            return body
    raise ScoresNotReady(f"the scores of chain {chain_id} are being replaced; retry shortly")


async def _serve(
    request: Request, kind: str, chain_id: int, window: str | None, build: Build
) -> Response:
    window = _window(request, window)
    answers: AnswerCache = request.app.state.answers
    body = answers.fresh((kind, chain_id, window))
    if body is None:
        body = await run_in_threadpool(_answer, request, kind, chain_id, window, build)
    return Response(body, media_type="application/json")


@router.get(
    "/v1/scores",
    response_model=ScoresOut,
    summary="Per-endpoint statistics, score, weight and the reasons for any exclusion",
)
async def get_scores(
    request: Request,
    chain_id: int = Query(gt=0, le=2**63 - 1),
    window: str | None = Query(None, description="one of the computed windows, e.g. 5m"),
) -> Response:
    def build(session: Session, run: ScoringRun, window: str) -> bytes:
        return _scores(session, chain_id, window, run).model_dump_json().encode()

    return await _serve(request, "scores", chain_id, window, build)


@router.get(
    "/v1/weights",
    response_model=WeightsOut,
    summary="Routing weights per endpoint: fractions summing to 1 and basis points to 10000",
)
async def get_weights(
    request: Request,
    chain_id: int = Query(gt=0, le=2**63 - 1),
    window: str | None = Query(
        None, description="one of the computed windows, e.g. 5m (default: the first); signed"
    ),
) -> Response:
    def build(session: Session, run: ScoringRun, window: str) -> bytes:
        return _weights(request, _scores(session, chain_id, window, run))

    return await _serve(request, "weights", chain_id, window, build)


def _weights(request: Request, scores: ScoresOut) -> bytes:
    weights = [
        EndpointWeight(
            endpoint_id=s.endpoint_id,
            operator_id=s.operator_id,
            endpoint=s.endpoint,
            weight=s.weight,
            weight_bps=s.weight_bps,
        )
        for s in scores.scores
    ]
    as_of_ms = int(scores.as_of.timestamp() * 1000)
    signer: LocalAccount = request.app.state.service_account
    signature = _signature(request, signer, scores.chain_id, scores.window, as_of_ms, weights)
    return (
        WeightsOut(
            chain_id=scores.chain_id,
            window=scores.window,
            as_of=scores.as_of,
            as_of_ms=as_of_ms,
            total_bps=sum(w.weight_bps for w in weights),
            weights=weights,
            signer=signer.address,
            signature=signature,
        )
        .model_dump_json()
        .encode()
    )


def _signature(
    request: Request,
    signer: LocalAccount,
    chain_id: int,
    window: str,
    as_of_ms: int,
    weights: list[EndpointWeight],
) -> str:
    """Signed once per scoring run and window (about a millisecond), then served from memory;
    deterministic (RFC 6979), so replicas with the same key and run serve the same signature."""
    cache: dict[tuple[object, ...], str] = request.app.state.weights_signatures
    entries = tuple((w.endpoint_id, w.operator_id, w.weight_bps) for w in weights)
    key = (chain_id, window, as_of_ms, entries)
    signature = cache.get(key)
    if signature is None:
        if len(cache) >= 1024:  # old runs are never asked again: start afresh
            cache.clear()
        typed = weights_typed_data(
            chain_id=chain_id, window=window, as_of_ms=as_of_ms, weights=entries
        )
        signature = cache[key] = sign_typed(signer, typed)
    return signature


def _probes(request: Request, chain_id: int, window: str | None) -> ProbesOut:
    window = _window(request, window)
    with session_scope(request.app.state.engine) as session:
        run = _latest(session, chain_id, window)
        probes = [
            ProbeAgreement(
                address=probe.address,
                name=probe.name,
                region=probe.region,
                endpoints=score.endpoints,
                disagreements=score.disagreements,
                kinds=json.loads(score.kinds),
                outlier_score=score.outlier_score,
            )
            for score, probe in run_probe_scores(session, run_id=run.id)
        ]
        return ProbesOut(chain_id=chain_id, window=window, as_of=run.as_of, probes=probes)


@router.get(
    "/v1/probes",
    response_model=ProbesOut,
    summary="Per probe: how often its view of the chain's endpoints differs from the others'",
)
async def get_probes(
    request: Request,
    chain_id: int = Query(gt=0, le=2**63 - 1),
    window: str | None = Query(None, description="one of the computed windows, e.g. 5m"),
) -> ProbesOut:
    return await run_in_threadpool(_probes, request, chain_id, window)
