"""The probe as an instrument, for a minute, as separate OS processes through the real CLI.

One ``monitor probe`` (its measuring process included) and one ``monitor serve`` (SQLite), and
as operators: a real Ethereum node (anvil), the same node behind a loopback proxy that holds
every request DELAY_S, 300 simulated nodes each on a port of its own (bench/_probe_nodes.py,
answering after 20 ms), and one endpoint whose port accepts connections and never answers.

What must hold:

* **Every endpoint keeps its cadence whatever its neighbours do.** In every round of the minute,
  every endpoint has exactly one result: the hung one a timeout, every other one an answer.
* **The figure is the operator's.** The proxied node's reported median latency is the direct
  node's plus the delay, within TOLERANCE_MS (the proxy's own forwarding is a few ms; the
  tolerance is wide enough for a loaded CI machine), with 300 other endpoints measured alongside.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from monitor.db.models import Result
from monitor.db.session import make_engine, session_scope
from monitor.demo import free_port
from monitor.probe.schedule import Schedule
from tests.e2e.test_processes import Processes, responds, wait_for
from tests.support.anvil import AnvilNode, anvil_available, anvil_nodes
from tests.support.proxy import FaultProxy

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not anvil_available(), reason="anvil not installed: make test"),
]

ROOT = Path(__file__).resolve().parents[2]
SIMULATED = 300
SIMULATED_DELAY_MS = 20
DELAY_S = 0.08
TOLERANCE_MS = 15.0
INTERVAL_S = 3.0
TIMEOUT_S = 2.0
MEASURED_S = 60.0


@pytest.fixture
def simulated() -> Iterator[list[int]]:
    """The simulated nodes' process; their ports."""
    proc = subprocess.Popen(
        [
            *(sys.executable, str(ROOT / "bench" / "_probe_nodes.py")),
            *("--endpoints", str(SIMULATED), "--delay-ms", str(SIMULATED_DELAY_MS)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["ports"]
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # its signal to stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A port whose connections are accepted (by the kernel's backlog) and never answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


def registry(path: Path, anvil: str, proxied: str, hung: str, ports: list[int], probe: str) -> Path:
    sla = {"availability": 0.99, "latency_p95_ms": 500, "max_lag_blocks": 2}
    operators = [
        {"id": "anvil-direct", "endpoints": [{"chain_id": 31337, "url": anvil}]},
        {"id": "anvil-delayed", "endpoints": [{"chain_id": 31337, "url": proxied}]},
        {"id": "hung", "endpoints": [{"chain_id": 1, "url": hung}]},
    ] + [
        {"id": f"sim-{i:03d}", "endpoints": [{"chain_id": 1, "url": f"http://127.0.0.1:{p}/"}]}
        for i, p in enumerate(ports)
    ]
    document = {
        "chains": [
            {"chain_id": 31337, "name": "anvil", "block_time_s": 1, "confirmations": 0, "sla": sla},
            {"chain_id": 1, "name": "sim", "block_time_s": 12, "confirmations": 6, "sla": sla},
        ],
        "operators": [{"name": o["id"], **o} for o in operators],
        "probes": [{"address": probe, "name": "probe", "region": "here"}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_every_endpoint_keeps_its_cadence_and_the_delay_is_measured(
    procs: Processes, simulated: list[int], hung_url: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'monitor.db'}"
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    procs.env["MONITOR_DATABASE_URL"] = database_url
    with (
        anvil_nodes(AnvilNode("direct", log_dir=tmp_path)) as [node],
        FaultProxy(node.url) as proxy,
    ):
        proxy.delay_s = DELAY_S
        key = tmp_path / "probe.key"
        [address] = [out.strip() for out in procs.run(("keygen", "--out", str(key)))]
        path = registry(
            tmp_path / "registry.yaml", node.url, proxy.url, hung_url, simulated, address
        )
        procs.run(("db", "upgrade"))
        procs.run(("registry", "apply", str(path)))
        procs.start("collector", "serve", "--port", str(api_port))
        wait_for("the collector", lambda: responds(f"{api}/healthz"), procs, 30.0)
        probe = procs.start(
            "probe",
            *("probe", "--collector", api, "--key", str(key)),
            *("--interval", str(INTERVAL_S), "--timeout", str(TIMEOUT_S)),
        )
        engine = make_engine(database_url)
        try:

            def stored() -> int:
                with session_scope(engine) as session:
                    return len(session.scalars(select(Result.id).limit(1)).all())

            wait_for("the probe's first batch", stored, procs, 30.0, step=0.2)
            started = time.time()
            time.sleep(MEASURED_S)
            assert procs.stop(probe, timeout=INTERVAL_S + 2 * TIMEOUT_S + 10) == 0
            with session_scope(engine) as session:
                rows = session.execute(
                    select(
                        Result.operator_id,
                        Result.observed_at,
                        Result.ok,
                        Result.error,
                        Result.latency_ms,
                    )
                ).all()
        finally:
            engine.dispose()

    schedule = Schedule(INTERVAL_S, bytes.fromhex(address[2:]))
    first = schedule.round_of(started) + 1
    last = schedule.round_of(started + MEASURED_S) - 1
    measured = range(first, last + 1)
    assert len(measured) >= MEASURED_S / INTERVAL_S - 3
    per_round: dict[int, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    hung_errors = Counter()
    for operator_id, observed_at, ok, error, latency_ms in rows:
        round_ = schedule.round_of(observed_at.timestamp())
        if round_ not in measured:
            continue
        per_round[round_][operator_id] += 1
        if operator_id == "hung":
            hung_errors[(ok, error)] += 1
        elif latency_ms is not None:
            latencies[operator_id].append(latency_ms)
    operators = {"anvil-direct", "anvil-delayed", "hung"} | {f"sim-{i:03d}" for i in range(300)}
    for round_ in measured:
        counts = per_round[round_]
        assert set(counts) == operators, (round_, operators - set(counts))
        assert set(counts.values()) == {1}, (round_, [k for k, n in counts.items() if n != 1])
    assert hung_errors == {(False, "timeout"): len(measured)}
    direct = statistics.median(latencies["anvil-direct"])
    delayed = statistics.median(latencies["anvil-delayed"])
    extra_ms = delayed - direct
    print(f"anvil p50 {direct:.2f} ms, behind the {DELAY_S * 1000:.0f} ms proxy {delayed:.2f} ms")
    assert DELAY_S * 1000 <= extra_ms <= DELAY_S * 1000 + TOLERANCE_MS, extra_ms
    simulated_p50 = statistics.median(
        statistics.median(v) for k, v in latencies.items() if k.startswith("sim-")
    )
    assert SIMULATED_DELAY_MS <= simulated_p50 <= SIMULATED_DELAY_MS + TOLERANCE_MS
