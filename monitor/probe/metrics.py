"""The probe's own Prometheus metrics (docs/metrics.md), served on a port of its own when
``MONITOR_PROBE_METRICS_PORT`` is set: rounds, check verdicts, deliveries, RPC latency, and the
outbox's depth read at scrape time; deliveries and depth per collector (the configured URLs: a
bounded label).

One ``CollectorRegistry`` per agent, never the global default registry. The HTTP server is
prometheus-client's own, in a thread; it reads the outbox through a connection of its own
(SQLite in WAL mode: a reader never blocks the agent), so it shares nothing with the event loop
but thread-safe instruments.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.checks.registry import CHECKS
from monitor.exceptions import ConfigError
from monitor.ingest.schemas import ProbeResult
from monitor.probe.rounds import CHECK_OUTCOMES, CheckOutcomes

log = logging.getLogger("monitor.probe")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
DELIVERY_OUTCOMES = ("accepted", "duplicate", "retry", "rejected")


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    batches: int  # bodies on disk: some collector still needs them
    pending: dict[str, int]  # collector -> batches it has yet to take
    rejected: dict[str, int]  # collector -> batches it refused for good


def outbox_counts(path: Path) -> OutboxCounts:
    """What the outbox at ``path`` holds, through a short-lived connection."""
    with closing(sqlite3.connect(path, timeout=5.0)) as db:
        batches = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        pending = db.execute("SELECT collector, count(*) FROM deliveries GROUP BY collector")
        rejected = db.execute("SELECT collector, count(*) FROM rejected GROUP BY collector")
        return OutboxCounts(int(batches), dict(pending.fetchall()), dict(rejected.fetchall()))


class OutboxCollector(Collector):
    def __init__(self, path: Path, collectors: Sequence[str]) -> None:
        self.path = path
        self.collectors = tuple(collectors)  # the label's values: the configured URLs only

    def collect(self) -> Iterator[Metric]:
        try:
            counts = outbox_counts(self.path)
        except sqlite3.Error as exc:  # absent from this scrape rather than a failed scrape
            log.warning("metrics: outbox unreadable (%s)", exc)
            return
        depth = GaugeMetricFamily(
            "monitor_probe_outbox_depth",
            "Batches in the outbox per collector: pending (not yet acknowledged by it) or "
            "rejected (refused for good by it)",
            labels=["collector", "state"],
        )
        for url in self.collectors:
            depth.add_metric([url, "pending"], counts.pending.get(url, 0))
            depth.add_metric([url, "rejected"], counts.rejected.get(url, 0))
        yield depth
        yield GaugeMetricFamily(
            "monitor_probe_outbox_batches",
            "Batch bodies on disk: not yet acknowledged or refused by every collector",
            value=counts.batches,
        )


class ProbeMetrics:
    """The agent's instruments, labelled by ``collectors`` (the configured URLs) where per
    collector; with ``outbox``, the outbox depth too (read at scrape time)."""

    def __init__(self, *, collectors: Sequence[str] = (), outbox: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        if outbox is not None:
            self.registry.register(OutboxCollector(outbox, collectors))
        self.rounds = Counter(
            "monitor_probe_rounds",
            "Rounds completed and queued as a signed batch",
            registry=self.registry,
        )
        self.round_duration = Histogram(
            "monitor_probe_round_duration_seconds",
            "From a round's start to its batch being queued: the interval its visits are "
            "spread over, plus the time its last answers took",
            buckets=ROUND_BUCKETS,
            registry=self.registry,
        )
        self.visits_missed = Counter(
            "monitor_probe_visits_missed",
            "Endpoint visits skipped because the probe fell behind its schedule (a stalled "
            "process, a starved CPU) or the endpoint's previous visit was still in flight",
            registry=self.registry,
        )
        self.checks = Counter(
            "monitor_probe_checks",
            "Endpoints a check examined, by the check's verdict: ok, unavailable, incorrect, "
            "or stale (syncing, stalled)",
            ["check", "outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "monitor_probe_deliveries",
            "Batch delivery attempts, by collector and outcome: accepted, duplicate (stored "
            "before), retry (collector unreachable, busy or asking for a retry), rejected "
            "(refused for good)",
            ["collector", "outcome"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "monitor_probe_rpc_latency_seconds",
            "Latency each result reports (the timed head call, "
            'eth_getBlockByNumber("latest")), available endpoints only',
            ["chain_id"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "monitor_build_info",
            "The running monitor's version (always 1)",
            ["version"],
            registry=self.registry,
        ).labels(__version__).set(1)
        for name in CHECKS:  # every series present from the start, at 0
            for outcome in CHECK_OUTCOMES:
                self.checks.labels(name, outcome)
        for url in collectors:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(url, outcome)

    def round_done(
        self, *, duration_s: float, results: list[ProbeResult], outcomes: CheckOutcomes
    ) -> None:
        self.rounds.inc()
        self.round_duration.observe(duration_s)
        for (check, outcome), n in outcomes.items():
            self.checks.labels(check, outcome).inc(n)
        for r in results:
            if r.latency_us is not None:
                self.rpc_latency.labels(str(r.chain_id)).observe(r.latency_us / 1e6)


class MetricsServer:
    """prometheus-client's HTTP server for ``registry`` on ``host:port`` (0: a free port, read
    back from ``.port``), in a thread, until :meth:`stop`."""

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"probe metrics: cannot listen on {host}:{port}: {exc}") from None
        self.host = host
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the listening socket; returns once the thread has ended."""
        server: WSGIServer = self._server
        server.shutdown()
        server.server_close()
        thread: threading.Thread = self._thread
        thread.join(timeout=5.0)
