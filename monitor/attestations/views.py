"""POST/GET /v1/attestations, the evidence, the bundle, the cosignatures and GET
/v1/batches/{hash}: thin; the work is monitor.attestations.service's and .cosign's."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from monitor.attestations.cosign import add_cosignature, countersign
from monitor.attestations.schemas import (
    BUNDLE_FORMAT,
    AttestationOut,
    AttestationSummary,
    Cosignature,
    CosignRequest,
    Countersigned,
    EvidenceOut,
    IssueRequest,
)
from monitor.attestations.service import (
    attestation_out,
    batch_body,
    bundle_page,
    evidence_out,
    get_attestation,
    issue_attestation,
    list_attestations,
)
from monitor.db.session import session_scope
from monitor.exceptions import AdminDisabled, MalformedRequest, Unauthorized
from monitor.ingest.views import read_body_capped

router = APIRouter(tags=["attestations"])

ATTESTATION_ID = PathParam(ge=1, le=2**63 - 1, description="the attestation's id")
MAX_ISSUE_BODY = 4096
MAX_COSIGN_BODY = 256 * 1024  # an attestation as served: its probes and cosignatures
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
M = TypeVar("M", bound=BaseModel)


def require_admin(request: Request) -> None:
    """``Authorization: Bearer <MONITOR_ADMIN_TOKEN>``, compared in constant time."""
    token: str | None = request.app.state.settings.admin_token
    if not token:
        raise AdminDisabled("admin endpoints are disabled: set MONITOR_ADMIN_TOKEN to enable them")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Unauthorized("give the admin token as `Authorization: Bearer <token>`")


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its nested models inlined: a ``#/$defs/...`` reference would
    not resolve inside the OpenAPI document (and the fuzzer reads it)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        raise MalformedRequest("; ".join(problems[:5]), code="invalid_request") from None


@router.post(
    "/v1/attestations",
    status_code=201,
    response_model=AttestationOut,
    summary="Issue a signed SLA attestation for an operator, chain and period (admin)",
    responses={
        401: {"description": "missing or wrong admin token"},
        403: {"description": "no admin token configured"},
        404: {"description": "unknown operator or chain"},
        409: {"description": "no evidence for the period (raw results past retention)"},
        422: {"description": "bad period or body"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": IssueRequest.model_json_schema()}},
        }
    },
)
async def post_attestation(request: Request) -> AttestationOut:
    require_admin(request)  # before the body is even read
    body = _parse(IssueRequest, await read_body_capped(request, MAX_ISSUE_BODY))
    state = request.app.state

    def issue() -> AttestationOut:
        with session_scope(state.engine) as session:
            row = issue_attestation(
                session,
                account=state.service_account,
                operator_id=body.operator_id,
                chain_id=body.chain_id,
                start=body.start,
                end=body.end,
                now=datetime.now(UTC),
                retention_days=state.settings.retention_days,
            )
            return attestation_out(session, row)

    return await run_in_threadpool(issue)


@router.get(
    "/v1/attestations",
    response_model=list[AttestationSummary],
    summary="Issued attestations, newest first",
)
async def get_attestations(
    request: Request,
    operator_id: str | None = Query(None, pattern=r"^[a-z0-9-]{1,64}$"),
    chain_id: int | None = Query(None, gt=0, le=2**63 - 1),
    limit: int = Query(100, ge=1, le=1000),
) -> list[AttestationSummary]:
    def load() -> list[AttestationSummary]:
        with session_scope(request.app.state.engine) as session:
            return list_attestations(
                session, operator_id=operator_id, chain_id=chain_id, limit=limit
            )

    return await run_in_threadpool(load)


@router.get(
    "/v1/attestations/{attestation_id}",
    response_model=AttestationOut,
    summary="An attestation: its full EIP-712 typed data, signature and penalty policy",
)
async def get_one(request: Request, attestation_id: int = ATTESTATION_ID) -> AttestationOut:
    def load() -> AttestationOut:
        with session_scope(request.app.state.engine) as session:
            return attestation_out(session, get_attestation(session, attestation_id))

    return await run_in_threadpool(load)


@router.get(
    "/v1/attestations/{attestation_id}/evidence",
    response_model=EvidenceOut,
    summary="The hashes of the raw signed batches an attestation commits to, and their root",
)
async def get_evidence(request: Request, attestation_id: int = ATTESTATION_ID) -> EvidenceOut:
    def load() -> EvidenceOut:
        with session_scope(request.app.state.engine) as session:
            return evidence_out(session, attestation_id)

    return await run_in_threadpool(load)


@router.get(
    "/v1/attestations/{attestation_id}/bundle",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}},
    summary="The attestation, its policy and every raw batch body: for `monitor verify`",
)
async def get_bundle(request: Request, attestation_id: int = ATTESTATION_ID) -> StreamingResponse:
    engine = request.app.state.engine

    def head() -> str:
        with session_scope(engine) as session:
            out = attestation_out(session, get_attestation(session, attestation_id))
        return (
            f'{{"format":{json.dumps(BUNDLE_FORMAT)},"attestation":{out.model_dump_json()},'
            '"batches":['
        )

    start = await run_in_threadpool(head)  # a 404 before anything is streamed

    def chunks() -> Iterator[str]:
        # One short transaction per page, by hash: no cursor is held across the response.
        yield start
        after, first = "", True
        while True:
            with session_scope(engine) as session:
                page = bundle_page(session, attestation_id, after=after)
            if not page:
                break
            for _, body in page:
                yield ("" if first else ",") + json.dumps(body)
                first = False
            after = page[-1][0]
        yield "]}"

    return StreamingResponse(chunks(), media_type="application/json")


@router.post(
    "/v1/attestations/cosign",
    response_model=Countersigned,
    status_code=201,
    summary="Countersign another collector's attestation, recomputed from this collector's own "
    "batches (admin)",
    responses={
        200: {"description": "countersigned before: the same signature, nothing stored"},
        401: {"description": "missing or wrong admin token; the issuer's signature fails"},
        403: {"description": "no admin token configured; an issuer the registry does not list"},
        404: {"description": "unknown operator or chain here"},
        409: {"description": "recomputed here, the attestation differs (the fields named)"},
        413: {"description": "body too large"},
        422: {"description": "not an attestation, or this collector's own"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(CosignRequest)}},
        }
    },
)
async def post_countersign(request: Request, response: Response) -> Countersigned:
    require_admin(request)  # before the body is even read
    body = _parse(CosignRequest, await read_body_capped(request, MAX_COSIGN_BODY))
    state = request.app.state

    def sign() -> tuple[Countersigned, bool]:
        with session_scope(state.engine) as session:
            return countersign(
                session,
                account=state.service_account,
                request=body,
                now=datetime.now(UTC),
                retention_days=state.settings.retention_days,
            )

    out, stored = await run_in_threadpool(sign)
    response.status_code = 201 if stored else 200
    return out


@router.post(
    "/v1/attestations/{attestation_id}/cosign",
    response_model=Cosignature,
    status_code=201,
    summary="Add another collector's countersignature to an attestation (it proves itself)",
    responses={
        200: {"description": "this collector's countersignature is already stored (kept)"},
        401: {"description": "the signature does not recover to signer over this typed data"},
        403: {"description": "a signer the registry's collectors do not include"},
        404: {"description": "no such attestation"},
        409: {"description": "the attestation has the most cosignatures it may hold"},
        422: {"description": "malformed body, or the issuer's own signature"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(Cosignature)}},
        }
    },
)
async def post_cosignature(
    request: Request, response: Response, attestation_id: int = ATTESTATION_ID
) -> Cosignature:
    body = _parse(Cosignature, await read_body_capped(request, MAX_ISSUE_BODY))
    engine = request.app.state.engine

    def add() -> tuple[Cosignature, bool]:
        with session_scope(engine) as session:
            return add_cosignature(session, attestation_id, cosignature=body, now=datetime.now(UTC))

    try:
        out, stored = await run_in_threadpool(add)
    except IntegrityError:  # the same cosignature stored at once by another request: now kept
        out, stored = await run_in_threadpool(add)
    response.status_code = 201 if stored else 200
    return out


@router.get(
    "/v1/batches/{batch_hash}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
    summary="A stored signed batch, exactly as the probe sent it (by keccak256 of its bytes)",
)
async def get_batch(
    request: Request,
    batch_hash: str = PathParam(description="0x + 64 hex digits: keccak256 of the raw body"),
) -> Response:
    if not _HASH.fullmatch(batch_hash):
        raise MalformedRequest(
            "a batch hash is 0x followed by 64 hex digits (keccak256 of the raw body)",
            code="malformed_hash",
        )

    def load() -> str:
        with session_scope(request.app.state.engine) as session:
            return batch_body(session, batch_hash.lower())

    return Response(await run_in_threadpool(load), media_type="application/json")
