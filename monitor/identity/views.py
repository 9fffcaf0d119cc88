"""GET /v1/identity: who this collector is, and how to check what it signs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from monitor import __version__
from monitor.signing.collector import COLLECTOR_DOMAIN, WEIGHTS_TYPE_HASH, WEIGHTS_TYPES
from monitor.signing.eip712 import EIP712_DOMAIN_TYPE

router = APIRouter(tags=["identity"])


class Eip712(BaseModel):
    domain: dict[str, str]
    types: dict[str, list[dict[str, str]]]
    type_hashes: dict[str, str]  # primary type -> keccak256(encodeType), for ecrecover verifiers


class IdentityOut(BaseModel):
    address: str  # the collector's signing address (EIP-55)
    eip712: Eip712
    version: str


@router.get(
    "/v1/identity",
    response_model=IdentityOut,
    summary="The collector's signing address and the EIP-712 domain and types it signs with",
)
async def identity(request: Request) -> IdentityOut:
    return IdentityOut(
        address=request.app.state.service_account.address,
        eip712=Eip712(
            domain=dict(COLLECTOR_DOMAIN),
            types={"EIP712Domain": EIP712_DOMAIN_TYPE, **WEIGHTS_TYPES},
            type_hashes={"Weights": WEIGHTS_TYPE_HASH},
        ),
        version=__version__,
    )
