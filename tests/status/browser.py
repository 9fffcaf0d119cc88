"""Debian's headless Chromium driven by selenium through Debian's chromedriver: load a page, wait
for its charts, and report what it drew, what it logged as errors and every URL it asked for.

Nothing is downloaded: the binaries are /usr/bin/chromium and /usr/bin/chromedriver (apt
packages ``chromium`` and ``chromium-driver``; .ci/run installs them), selenium is given both
paths, so its driver manager never runs. Anything but loopback goes to a closed proxy port, so a
request to another host fails here instead of leaving the machine (and is still reported).

Also the documentation's screenshot, from a running collector (``make demo`` prints its URL)::

    .venv/bin/python -m tests.status.browser http://127.0.0.1:PORT/ docs/images/status-page.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1200, 900
MAX_HEIGHT = 4000  # a full-page screenshot is cut here
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_SCHEMES = {"data", "about", "blob", "chrome", "chrome-untrusted", "devtools"}
# Headless, as root in CI, and quiet: without the background-networking flags Chromium tries to
# reach Google's hosts at start (refused by a closed network, and not the page's doing).
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    f"--window-size={WIDTH},{HEIGHT}",
]


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)  # console entries at level SEVERE
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    def outside(self) -> list[str]:
        """Requests to anything but loopback (the browser's own schemes are not the network)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in LOCAL_SCHEMES
            and urlsplit(url).hostname not in LOOPBACK_HOSTS
        ]


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile; always quit (chromedriver and the browser's
    processes end), the profile removed."""
    profile = tempfile.mkdtemp(prefix="monitor-chromium-")
    try:
        with _closed_port() as dead:
            options = Options()
            options.binary_location = str(CHROMIUM)
            for flag in (*FLAGS, f"--user-data-dir={profile}", f"--proxy-server=127.0.0.1:{dead}"):
                options.add_argument(flag)
            options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
            service = Service(executable_path=str(CHROMEDRIVER))
            driver = webdriver.Chrome(options=options, service=service)
            try:
                yield driver
            finally:
                driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def leftover_processes(marker: str = "monitor-chromium-") -> list[str]:
    """Chromium processes still running with one of our profiles (``chromium`` quits them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if marker in cmdline and "State:\tZ" not in status:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def visit(driver: WebDriver, url: str, *, timeout_s: float = 15.0) -> PageVisit:
    """Load ``url`` and wait until every chart on it has finished (drawn, empty or failed)."""
    for log in ("browser", "performance"):
        driver.get_log(log)  # drained: what follows is this page's
    driver.get(url)
    WebDriverWait(driver, timeout_s).until(
        lambda d: all(
            f.get_attribute("data-state") != "pending"
            for f in d.find_elements(By.CSS_SELECTOR, "figure.chart")
        )
    )
    result = PageVisit()
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            result.errors.append(entry["message"])
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            result.requests.append(message["params"]["request"]["url"])
    return result


def screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page (up to MAX_HEIGHT pixels high) as PNG, through the DevTools protocol."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {
        "x": 0,
        "y": 0,
        "width": size["width"],
        "height": min(size["height"], MAX_HEIGHT),
        "scale": 1,
    }
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {sys.argv[0]} URL OUT.png", file=sys.stderr)
        return 2
    url, out = argv
    with chromium() as driver:
        result = visit(driver, url)
        screenshot(driver, Path(out))
    for problem in result.errors + [f"request outside: {u}" for u in result.outside()]:
        print(problem, file=sys.stderr)
    print(f"{out}: {os.path.getsize(out)} bytes")
    return 1 if result.errors or result.outside() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
