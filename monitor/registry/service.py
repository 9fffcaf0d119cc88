"""Reads of the registry for the API: the probe's targets, and URLs made safe to publish."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.db.models import Chain, Endpoint, Operator, Probe
from monitor.exceptions import UnknownProbe
from monitor.probe.targets import ChainTarget, EndpointTarget, Targets


def public_url(url: str) -> str:
    """scheme://host[:port] only: paths, queries and user info often hold operators' API keys."""
    parts = urlsplit(url)
    # netloc keeps IPv6 brackets and the port as written; drop any user:password@ in front.
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def require_active_probe(session: Session, *, address: str) -> Probe:
    probe = session.scalar(select(Probe).where(Probe.address == address))
    if probe is None or not probe.active:
        state = "not registered" if probe is None else "deactivated"
        raise UnknownProbe(f"probe {address} is {state}")
    return probe


def targets(session: Session) -> Targets:
    """Every active endpoint of every active chain, with the chain's parameters."""
    rows = session.execute(
        select(Chain, Endpoint)
        .join(Endpoint, Endpoint.chain_id == Chain.chain_id)
        .join(Operator, Operator.id == Endpoint.operator_id)
        .where(Chain.active.is_(True), Endpoint.active.is_(True), Operator.active.is_(True))
        .order_by(Chain.chain_id, Endpoint.id)
    ).all()
    chains: dict[int, ChainTarget] = {}
    for chain, endpoint in rows:
        target = chains.setdefault(
            chain.chain_id,
            ChainTarget(
                chain_id=chain.chain_id,
                name=chain.name,
                block_time_s=chain.block_time_s,
                confirmations=chain.confirmations,
                quorum=chain.quorum,
                checks=json.loads(chain.checks),
                endpoints=[],
            ),
        )
        target.endpoints.append(
            EndpointTarget(
                endpoint_id=endpoint.id,
                operator_id=endpoint.operator_id,
                url=endpoint.url,
                archive=endpoint.archive,
            )
        )
    return Targets(chains=list(chains.values()))
