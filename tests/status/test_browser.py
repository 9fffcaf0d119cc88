"""The status page in a real headless Chromium (Debian's, through chromedriver and selenium), fed
by the demo's simulated operators through real probes: the operators are rendered, the chart is
drawn, nothing is logged as an error, nothing is asked of any host but loopback, and screenshots
are saved as test artefacts ($MONITOR_TEST_ARTIFACTS, else test-artifacts/ in the checkout)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import Engine

from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.sla.job import run_rollups
from tests.conftest import Network
from tests.status.browser import CHROMIUM, chromium, leftover_processes, screenshot, visit
from tests.status.support import OPERATORS

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (.ci/run does)",
)

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
# as the simnet's registry names them (monitor.simnet.write_registry)
NAMES = [
    "Alpha (healthy)",
    "Bravo (lagging)",
    "Charlie (fork)",
    "Delta (slow)",
    "Echo (lying_head)",
]


def artifacts() -> Path:
    return Path(os.environ.get("MONITOR_TEST_ARTIFACTS") or ROOT / "test-artifacts")


async def probe_and_score(
    network: Network, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """Three probes check the simnet's operators; each round is delivered and scored, so the
    chart has a point per round."""
    agents = [
        ProbeAgent(
            settings=settings, account=account, outbox=Outbox(tmp_path / f"probe-{i}.sqlite")
        )
        for i, account in enumerate(network.probes)
    ]
    try:
        for _ in range(ROUNDS):
            await asyncio.gather(*(agent.round() for agent in agents))
            assert all([await agent.deliver_pending() for agent in agents])
            run_scoring(engine, settings)
            await asyncio.sleep(0.3)
    finally:
        for agent in agents:
            await agent.aclose()
            agent.outbox.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_status_page_in_chromium(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    asyncio.run(probe_and_score(network, engine, settings, tmp_path))
    run_rollups(engine, settings)

    with chromium() as driver:
        index = visit(driver, f"{collector.url}/")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.operators tr.operator")
        assert [r.get_attribute("data-operator") for r in rows] == OPERATORS
        table = driver.find_element(By.CSS_SELECTOR, "table.operators").text
        for name in NAMES:
            assert name in table
        assert "excluded" in table and "ok" in table

        [figure] = driver.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert figure.get_attribute("data-state") == "drawn"
        lines = figure.find_elements(By.CSS_SELECTOR, "svg polyline.line")
        assert len(lines) == len(OPERATORS)  # one per operator, a point per scoring run
        for line in lines:
            points = (line.get_attribute("points") or "").split()
            assert len(points) >= 2, points
            box = driver.execute_script("return arguments[0].getBBox()", line)
            assert box["width"] > 0, box
        # Drawn in the stylesheet's colours: the CSS loaded, nothing blocked it.
        stroke = driver.execute_script("return getComputedStyle(arguments[0]).stroke", lines[0])
        assert stroke == "rgb(0, 114, 178)", stroke
        legend = [li.text for li in figure.find_elements(By.CSS_SELECTOR, "ul.legend li")]
        assert legend == NAMES
        screenshot(driver, artifacts() / "status-page.png")

        operator = visit(driver, f"{collector.url}/status/operators/bravo")
        assert "SLA this month" in driver.find_element(By.TAG_NAME, "main").text
        screenshot(driver, artifacts() / "status-operator.png")

    for page in (index, operator):
        assert page.errors == [], page.errors
        assert page.outside() == [], page.outside()
    asked = index.requests + operator.requests
    assert any("/status/api/history?chain_id=" in url for url in asked), asked
    assert any("/status/static/chart.js" in url for url in asked), asked
    deadline = time.monotonic() + 5
    while leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_processes() == []
    assert (artifacts() / "status-page.png").stat().st_size > 10_000
