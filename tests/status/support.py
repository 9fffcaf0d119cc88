"""Scored data for the status page tests: signed batches posted to the real collector over
loopback, scoring runs a minute apart, rollups and breach events; and a small HTML reader."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import httpx
from sqlalchemy import Engine

from monitor.scoring.job import run_scoring
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from monitor.sla.job import run_rollups
from tests.conftest import Network
from tests.support.results import answered
from tests.test_api import endpoint_ids

GOOD, BAD = "0x" + "aa" * 32, "0x" + "bb" * 32
# operator -> latency (µs), lag (blocks), its block hash; echo sends nothing (unscored data)
BEHAVIOUR = {
    "alpha": (20_000, 0, GOOD),
    "bravo": (25_000, 4, GOOD),
    "charlie": (20_000, 0, BAD),
    "delta": (320_000, 0, GOOD),
}
OPERATORS = ["alpha", "bravo", "charlie", "delta", "echo"]


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def deliver(url: str, engine: Engine, network: Network, *, at: datetime, rounds: int = 2) -> None:
    """Each probe posts one batch: ``rounds`` checks of alpha..delta a second apart from ``at``."""
    ids = endpoint_ids(engine)
    for account in network.probes:
        results = []
        for i in range(rounds):
            head = 5_000 + i
            for operator_id, (latency_us, lag, block_hash) in BEHAVIOUR.items():
                results.append(
                    answered(
                        endpoint_id=ids[operator_id],
                        operator_id=operator_id,
                        chain_id=network.chain_id,
                        observed_at_ms=_ms(at) + i * 1_000,
                        error=None if block_hash == GOOD else "wrong_hash",
                        latency_us=latency_us,
                        head=head,
                        lag=lag,
                        block_hash=block_hash,
                        correct=block_hash == GOOD,
                    )
                )
        response = httpx.post(
            f"{url}/v1/batches",
            content=sign_batch(account, results).model_dump_json(),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 200, response.text


def feed(
    url: str, engine: Engine, settings: Settings, network: Network, *, minutes: int = 3
) -> datetime:
    """Checks in each of the last ``minutes`` whole minutes (at their 10th second), each minute
    scored (runs a minute apart: the chart has a point per run), then rolled up; breach events
    judge the last whole minute. Returns the time it ran as."""
    now = datetime.now(UTC)
    for m in range(minutes, 0, -1):
        at = now.replace(second=10, microsecond=0) - timedelta(minutes=m)
        deliver(url, engine, network, at=at)
        run_scoring(engine, settings, as_of=at + timedelta(seconds=5))
    run_rollups(engine, settings.model_copy(update={"breach_window_s": 60}), now=now)
    return now


class _Links(HTMLParser):
    """Every URL-valued attribute of the page, and the text of each element by its attributes."""

    URL_ATTRIBUTES = ("src", "href", "action", "data-history", "poster", "srcset")

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in self.URL_ATTRIBUTES and v is not None]


def page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def absolute_hosts(text: str, *, scheme_relative: bool = True) -> set[str]:
    """The host[:port] of every absolute URL in ``text``, and of every scheme-relative one
    (``//host/...``) unless ``scheme_relative`` is False (JavaScript's comments start so)."""
    pattern = r"(?:https?:)?//" if scheme_relative else r"https?://"
    return set(re.findall(pattern + r"([^/\s\"'<>()]+)", text))


def operator_rows(html: str) -> dict[str, str]:
    """operator id -> the HTML of its (first) row in the index page's table."""
    rows: dict[str, str] = {}
    for operator_id, row in re.findall(
        r'<tr class="operator" data-operator="([^"]+)">(.*?)</tr>', html, re.S
    ):
        rows.setdefault(operator_id, row)
    return rows


def cell(row: str, css_class: str) -> str:
    match = re.search(rf'<td class="[^"]*\b{css_class}\b[^"]*"[^>]*>(.*?)</td>', row, re.S)
    assert match, (css_class, row)
    return match.group(1).strip()
