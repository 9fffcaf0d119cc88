"""GET /v1/identity: who this collector is, how to check what it signs, and which registry it
applies (its hash and who approved it), so collectors that disagree show it at once."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from monitor import __version__
from monitor.db.session import session_scope
from monitor.registry.state import registry_in_force
from monitor.signing.collector import COLLECTOR_DOMAIN, published_types, type_hashes

router = APIRouter(tags=["identity"])


class Eip712(BaseModel):
    domain: dict[str, str]
    # EIP712Domain and every type signed in the domain. Build a message from EIP712Domain, its
    # primary type and the types that one references (docs/signing.md): eth-account refuses a
    # types map with more than one primary type, and later versions add more (attestations).
    types: dict[str, list[dict[str, str]]]
    type_hashes: dict[str, str] = Field(
        description="primary type -> keccak256(encodeType), for on-chain (ecrecover) verifiers"
    )


class SignatureOut(BaseModel):
    signer: str
    signature: str = Field(description="EIP-712 RegistryApproval signature (docs/governance.md)")


class CollectorOut(BaseModel):
    address: str
    name: str
    url: str | None


class RegistryOut(BaseModel):
    hash: str | None = Field(
        description="keccak256 of the canonical registry in force (docs/governance.md); "
        "null before one is applied"
    )
    applied_at: datetime | None = Field(description="when this hash came into force")
    signers: list[str] = Field(
        description="who approved it: their signatures were verified when it was applied"
    )
    signatures: list[SignatureOut]
    threshold: int | None = Field(
        description="approvals required when it was applied; null: no governance configured"
    )
    governance_signers: list[str]
    collectors: list[CollectorOut] = Field(description="the network's registered collectors")


class IdentityOut(BaseModel):
    address: str = Field(description="the collector's signing address (EIP-55)")
    eip712: Eip712
    version: str = Field(description="the collector's software version")
    registry: RegistryOut


NO_REGISTRY = RegistryOut(
    hash=None,
    applied_at=None,
    signers=[],
    signatures=[],
    threshold=None,
    governance_signers=[],
    collectors=[],
)


@router.get(
    "/v1/identity",
    response_model=IdentityOut,
    summary="The collector's signing address, the EIP-712 domain and types it signs with, and "
    "the registry it applies",
)
async def identity(request: Request) -> IdentityOut:
    def read() -> RegistryOut:
        with session_scope(request.app.state.engine) as session:
            state = registry_in_force(session)
        if state is None:
            return NO_REGISTRY
        return RegistryOut(
            hash=state.hash,
            applied_at=state.applied_at,
            signers=state.signers,
            signatures=[SignatureOut(**s.model_dump()) for s in state.signatures],
            threshold=state.threshold,
            governance_signers=state.governance_signers,
            collectors=[CollectorOut(**c.model_dump()) for c in state.collectors],
        )

    return IdentityOut(
        address=request.app.state.service_account.address,
        eip712=Eip712(
            domain=dict(COLLECTOR_DOMAIN), types=published_types(), type_hashes=type_hashes()
        ),
        version=__version__,
        registry=await run_in_threadpool(read),
    )
