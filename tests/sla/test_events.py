"""Breach events open and close with the rolling SLA; the webhook gets both, retried with
backoff, from its own job (a dead receiver delays nothing else)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import Engine, select

from monitor.db.session import session_scope
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.sla.job import run_rollups, run_webhooks
from monitor.sla.models import WebhookDelivery
from monitor.sla.webhook import backoff
from tests.conftest import make_settings
from tests.sla.support import T0, Fleet, make_fleet, post, result


class Receiver:
    """A webhook receiver on loopback that fails its first ``failures`` requests with 500."""

    def __init__(self, failures: int) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, object]]] = []
        self.failures = failures
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((dict(self.headers), body))
                status = 500 if len(outer.requests) <= outer.failures else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=1)
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(timeout=5)


def bravo_minutes(engine: Engine, fleet: Fleet, start_minute: int, count: int, *, ok: bool) -> None:
    for m in range(start_minute, start_minute + count):
        at = T0 + timedelta(minutes=m)
        for account in fleet.probes:
            post(
                engine,
                account,
                [result(fleet, "bravo", at + timedelta(seconds=20), ok=ok)],
                created=at + timedelta(seconds=50),
            )


def test_a_breach_opens_closes_and_reaches_the_webhook(
    engine: Engine, database_url: str, receiver: Receiver, collector: ServerThread
) -> None:
    settings = make_settings(database_url, webhook_url=receiver.url, breach_window_s=600)
    fleet = make_fleet(engine)
    bravo_minutes(engine, fleet, 0, 5, ok=True)
    bravo_minutes(engine, fleet, 5, 5, ok=False)  # the rolling 10 minutes: half of them down
    run_rollups(engine, settings, now=T0 + timedelta(minutes=10))
    events = httpx.get(f"{collector.url}/v1/events", params={"operator_id": "bravo"}).json()
    assert [(e["target"], e["ended_at"]) for e in events] == [("availability", None)]
    assert events[0]["reason"] == ("availability 50 % over the last 10 min, below the target 99 %")
    assert (events[0]["figure"], events[0]["threshold"]) == (500_000, 990_000)
    assert httpx.get(f"{collector.url}/v1/events", params={"operator_id": "alpha"}).json() == []

    first = T0 + timedelta(minutes=10, seconds=5)
    run_webhooks(engine, settings, now=first)  # the receiver answers 500
    run_webhooks(engine, settings, now=first + timedelta(milliseconds=500))  # not due yet
    assert len(receiver.requests) == 1
    run_webhooks(engine, settings, now=first + backoff(1))
    assert len(receiver.requests) == 2
    (h1, b1), (h2, b2) = receiver.requests
    assert h1["X-Monitor-Delivery"] == h2["X-Monitor-Delivery"]  # the same delivery, retried
    assert b1 == b2 and b1["type"] == "breach_started"
    assert b1["event"]["operator_id"] == "bravo" and b1["event"]["target"] == "availability"

    # ten healthy minutes later, the rolling window meets the target again
    bravo_minutes(engine, fleet, 10, 10, ok=True)
    run_rollups(engine, settings, now=T0 + timedelta(minutes=19))  # still a down minute in it
    assert httpx.get(f"{collector.url}/v1/events", params={"open": True}).json() != []
    run_rollups(engine, settings, now=T0 + timedelta(minutes=20))
    events = httpx.get(f"{collector.url}/v1/events", params={"operator_id": "bravo"}).json()
    assert events[0]["ended_at"] is not None
    assert httpx.get(f"{collector.url}/v1/events", params={"open": True}).json() == []
    run_webhooks(engine, settings, now=T0 + timedelta(minutes=21))
    assert receiver.requests[-1][1]["type"] == "breach_ended"


def test_an_unreachable_webhook_keeps_the_notice_and_blocks_nothing(
    engine: Engine, database_url: str
) -> None:
    dead = "http://127.0.0.1:9/hook"  # the discard port: nothing listens
    settings: Settings = make_settings(
        database_url, webhook_url=dead, webhook_timeout_s=1.0, breach_window_s=300
    )
    fleet = make_fleet(engine)
    bravo_minutes(engine, fleet, 0, 5, ok=False)
    run_rollups(engine, settings, now=T0 + timedelta(minutes=5))  # opens; queues only
    run_webhooks(engine, settings, now=T0 + timedelta(minutes=5))
    with session_scope(engine) as session:
        (delivery,) = session.scalars(select(WebhookDelivery)).all()
        assert delivery.delivered_at is None and delivery.attempts == 1
        assert delivery.last_error and "Connect" in delivery.last_error
    # ingest and rollups carry on
    bravo_minutes(engine, fleet, 5, 1, ok=True)
    assert run_rollups(engine, settings, now=T0 + timedelta(minutes=6)) == 3
