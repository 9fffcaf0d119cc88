"""The probe's own /metrics, against the real collector over loopback, on SQLite and PostgreSQL:
the outbox depth matches the outbox, rounds, check verdicts and deliveries are counted, the port
closes with the probe, and with no port nothing listens."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor import cli
from monitor.checks.registry import CHECKS
from monitor.exceptions import ConfigError
from monitor.probe.agent import ProbeAgent, run_probe
from monitor.probe.metrics import MetricsServer, ProbeMetrics
from monitor.probe.outbox import Outbox
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.simnet import DEMO_OPERATORS
from tests.conftest import Network

OPERATORS = len(DEMO_OPERATORS)


def scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(url, timeout=5.0)
    assert response.status_code == 200, response.text
    families = list(text_string_to_metric_families(response.text))
    for family in families:
        assert family.name.startswith("monitor_"), family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    return {f.name: f.samples for f in families}


def samples(families: dict[str, list[Sample]], name: str, **labels: str) -> list[float]:
    family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return [
        s.value
        for s in families.get(family, [])
        if s.name == name and labels.items() <= s.labels.items()
    ]


def value(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    (found,) = samples(families, name, **labels)
    return found


def refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def listening_ports() -> set[int]:
    """TCP ports this process listens on (its socket inodes matched to /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def fast(network: Network) -> None:
    """The demo's slow operator made healthy: these tests count rounds, not latency."""
    response = httpx.post(
        f"{network.sim.url}/_control/delta", json={"behaviour": "healthy"}, timeout=5.0
    )
    assert response.status_code == 200, response.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_outbox_rounds_checks_and_deliveries(
    network: Network, collector: ServerThread, settings: Settings, tmp_path: Path
) -> None:
    fast(network)
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    url = collector.url
    outbox_path = tmp_path / "probe.outbox.sqlite"

    async def scenario() -> None:
        outbox = Outbox(outbox_path)
        metrics = ProbeMetrics(collectors=[url], outbox=outbox_path)
        server = MetricsServer(metrics.registry, host="127.0.0.1", port=0)
        agent = ProbeAgent(
            settings=settings, account=network.probes[0], outbox=outbox, metrics=metrics
        )
        try:
            families = await asyncio.to_thread(scrape, server.url)
            assert value(families, "monitor_probe_outbox_depth", state="pending") == 0
            assert value(families, "monitor_probe_rounds_total") == 0
            checks = {s.labels["check"] for s in families["monitor_probe_checks"]}
            assert checks == set(CHECKS)

            for _ in range(2):
                assert await agent.round() is not None
            families = await asyncio.to_thread(scrape, server.url)
            assert outbox.depth() == 2
            assert value(families, "monitor_probe_outbox_depth", state="pending") == 2
            assert value(families, "monitor_probe_outbox_depth", state="rejected") == 0
            assert (
                value(families, "monitor_probe_outbox_depth", collector=url, state="pending") == 2
            )
            assert value(families, "monitor_probe_outbox_batches") == 2
            assert value(families, "monitor_probe_rounds_total") == 2
            assert value(families, "monitor_probe_round_duration_seconds_count") == 2
            # Every endpoint through the head check, twice.
            head = {
                s.labels["outcome"]: s.value
                for s in families["monitor_probe_checks"]
                if s.name.endswith("_total") and s.labels["check"] == "head"
            }
            assert sum(head.values()) == 2 * OPERATORS
            assert head["ok"] >= 2 * (OPERATORS - 1)
            # echo claims a head the chain has not reached: head_exists finds it incorrect.
            head_exists = "monitor_probe_checks_total"
            assert value(families, head_exists, check="head_exists", outcome="incorrect") == 2
            latencies = value(
                families, "monitor_probe_rpc_latency_seconds_count", chain_id=str(network.chain_id)
            )
            # A latency for each endpoint that answered (and stayed available through the round).
            assert 2 * (OPERATORS - 1) <= latencies <= head["ok"]

            # The second one refused for good (tampered on disk): rejected, and counted so.
            first, second = outbox.oldest(collector=url)
            outbox.acknowledge(second.batch_id, collector=url)
            outbox.put(second.batch_id, second.body.replace(b'"ok":true', b'"ok":false', 1))
            assert await agent.deliver_pending() is True
            families = await asyncio.to_thread(scrape, server.url)
            assert (outbox.depth(), outbox.rejected_count()) == (0, 1)
            assert value(families, "monitor_probe_outbox_depth", state="pending") == 0
            assert value(families, "monitor_probe_outbox_depth", state="rejected") == 1
            assert value(families, "monitor_probe_outbox_batches") == 0
            assert {s.labels["collector"] for s in families["monitor_probe_deliveries"]} == {url}
            deliveries = {
                s.labels["outcome"]: s.value for s in families["monitor_probe_deliveries"]
            }
            assert deliveries == {"accepted": 1, "duplicate": 0, "retry": 0, "rejected": 1}

            # The first one again, as if its acknowledgement had been lost: a duplicate.
            outbox.put(first.batch_id, first.body)
            assert await agent.deliver_pending() is True
            families = await asyncio.to_thread(scrape, server.url)
            assert value(families, "monitor_probe_deliveries_total", outcome="duplicate") == 1
            assert value(families, "monitor_probe_rounds_total") == 2
        finally:
            await asyncio.to_thread(server.stop)
            await agent.aclose()
            outbox.close()
        assert refused(server.port)

    asyncio.run(scenario())


def test_run_probe_serves_metrics_only_when_asked(
    network: Network, collector: ServerThread, settings: Settings, tmp_path: Path
) -> None:
    fast(network)
    key = tmp_path / "probe.key"
    key.write_text(network.probes[0].key.hex() + "\n")
    key.chmod(0o600)
    port = free_port()
    base = settings.model_copy(
        update={"collector_urls": [collector.url], "key_file": key, "interval_s": 0.5}
    )
    baseline = listening_ports()

    async def with_port() -> dict[str, list[Sample]]:
        settings = base.model_copy(update={"probe_metrics_port": port})
        stop = asyncio.Event()
        probe = asyncio.create_task(run_probe(settings, stop=stop))
        try:
            async with asyncio.timeout(20):
                while True:
                    await asyncio.sleep(0.1)
                    try:
                        families = await asyncio.to_thread(
                            scrape, f"http://127.0.0.1:{port}/metrics"
                        )
                    except httpx.ConnectError:
                        continue
                    if value(families, "monitor_probe_rounds_total") >= 2:
                        return families
        finally:
            stop.set()
            await probe

    families = asyncio.run(with_port())
    assert value(families, "monitor_probe_checks_total", check="chain_id", outcome="ok") >= 2
    assert refused(port)  # closed with the probe
    assert listening_ports() == baseline

    async def without_port() -> set[int]:
        stop = asyncio.Event()
        probe = asyncio.create_task(run_probe(base, stop=stop))
        try:
            await asyncio.sleep(0.3)  # a round under way, delivery running
            return listening_ports()
        finally:
            stop.set()
            await probe

    assert asyncio.run(without_port()) == baseline
    assert refused(port)


def test_cli_probe_metrics_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    async def fake_run_probe(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setattr("monitor.probe.agent.run_probe", fake_run_probe)
    monkeypatch.delenv("MONITOR_PROBE_METRICS_PORT", raising=False)
    monkeypatch.delenv("MONITOR_PROBE_METRICS_HOST", raising=False)
    cli.main(["probe"])
    cli.main(["probe", "--metrics-port", "9464", "--metrics-host", "0.0.0.0"])
    monkeypatch.setenv("MONITOR_PROBE_METRICS_PORT", "9465")
    cli.main(["probe"])
    ports = [(s.probe_metrics_port, s.probe_metrics_host) for s in seen]
    assert ports == [(None, "127.0.0.1"), (9464, "0.0.0.0"), (9465, "127.0.0.1")]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--metrics-port", "70000"])
    assert exit_.value.code == 2


def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            MetricsServer(ProbeMetrics().registry, host="127.0.0.1", port=port)
