"""Deliver queued breach notices to the webhook: POST JSON, retried with exponential backoff
(1 s doubling up to an hour) until a 2xx. Runs in its own scheduled job, apart from ingest, and
holds no database transaction while it waits on the receiver."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine, select

from monitor.db.session import session_scope
from monitor.sla.models import WebhookDelivery

log = logging.getLogger("monitor.webhook")

MAX_BACKOFF = timedelta(hours=1)
PER_RUN = 50


@dataclass(frozen=True)
class Pending:
    id: int
    kind: str
    payload: str


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failure: 1 s, 2 s, 4 s, ... at most an hour."""
    return min(MAX_BACKOFF, timedelta(seconds=2 ** min(attempts - 1, 12)))


def send(client: httpx.Client, url: str, pending: Pending) -> str | None:
    """POST one notice; None on a 2xx, else what went wrong."""
    try:
        response = client.post(
            url,
            content=pending.payload,
            headers={
                "Content-Type": "application/json",
                "X-Monitor-Delivery": str(pending.id),  # the same on every retry: dedupe on it
                "X-Monitor-Event": pending.kind,
            },
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"


def deliver_pending(
    engine: Engine, *, url: str, client: httpx.Client, now: datetime
) -> tuple[int, int]:
    """Try the due deliveries, oldest first; returns (delivered, failed)."""
    with session_scope(engine) as session:
        due = [
            Pending(d.id, d.kind, d.payload)
            for d in session.scalars(
                select(WebhookDelivery)
                .where(
                    WebhookDelivery.delivered_at.is_(None), WebhookDelivery.next_attempt_at <= now
                )
                .order_by(WebhookDelivery.id)
                .limit(PER_RUN)
            )
        ]
    outcomes = {p.id: send(client, url, p) for p in due}
    with session_scope(engine) as session:
        for delivery in session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.id.in_(list(outcomes)))
        ):
            error = outcomes[delivery.id]
            delivery.attempts += 1
            if error is None:
                delivery.delivered_at = now
            else:
                delivery.last_error = error
                delivery.next_attempt_at = now + backoff(delivery.attempts)
                log.warning("webhook delivery %d failed (%s); retrying", delivery.id, error)
    failed = sum(e is not None for e in outcomes.values())
    return len(outcomes) - failed, failed
