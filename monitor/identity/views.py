"""GET /v1/identity: who this collector is, and how to check what it signs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from monitor import __version__
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


class IdentityOut(BaseModel):
    address: str = Field(description="the collector's signing address (EIP-55)")
    eip712: Eip712
    version: str = Field(description="the collector's software version")


@router.get(
    "/v1/identity",
    response_model=IdentityOut,
    summary="The collector's signing address and the EIP-712 domain and types it signs with",
)
async def identity(request: Request) -> IdentityOut:
    return IdentityOut(
        address=request.app.state.service_account.address,
        eip712=Eip712(
            domain=dict(COLLECTOR_DOMAIN), types=published_types(), type_hashes=type_hashes()
        ),
        version=__version__,
    )
