"""Probes in their own network namespaces: each ``monitor probe`` runs in a namespace of its own
and reaches the simulated operators and the collector across a real interface, not loopback.

Topology, all made by the test and removed by it (also on failure, and stale leftovers of a
crashed earlier run of this test are removed first):

- a bridge ``brmon<pid>`` in the root namespace with ``10.231.<n>.1/24``, the address of the
  simnet and the collector (both listen on it only);
- per probe ``i``: a namespace ``monitor-test-<pid>-<i>`` and a veth pair, the host end attached
  to the bridge, the other end in the namespace with ``10.231.<n>.<10+i>/24``.

``10.231.<n>.0/24`` is a private subnet (RFC 1918) that exists only on this bridge and in these
namespaces: no route leads anywhere else and nothing forwards it, so the traffic never leaves
the machine. Tests only use loopback or the addresses of hosts in namespaces they made
themselves. The probes' HTTP leaves through the veth of their namespace; its byte counters
growing is the proof that it crossed interfaces.

Needs root and iproute2 (``ip netns``); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from monitor import simnet
from monitor.db.models import Batch, Probe
from monitor.db.session import make_engine, session_scope
from monitor.demo import free_port
from tests.e2e.test_processes import Processes, responds, wait_for

pytestmark = [pytest.mark.e2e]

PROBES = 3
INTERVAL_S = 1.0
PREFIX = "monitor-test-"  # namespaces: monitor-test-<pid>-<i>
BRIDGE_PREFIX = "brmon"  # interfaces are at most 15 characters: brmon<pid>, vm<pid>h<i>
IP_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 30.0
PIPELINE_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def netns_unavailable() -> str | None:
    """Why this test cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed; the CI image needs `apt-get install iproute2`"
    probe = f"{PREFIX}{os.getpid()}-check"
    try:
        made = ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> None:
    """Remove namespaces and bridges left by a crashed earlier run of this test: those whose
    creating process is gone (a run going on in parallel keeps its own)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{re.escape(PREFIX)}(\d+)-\w+", name)
        if match and not pid_alive(int(match.group(1))):
            ip("netns", "delete", name, check=False)  # its veth ends go with it
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        match = re.match(r"\d+: (brmon(\d+)|vm(\d+)h\d+)[@:]", line)
        if match:
            pid = int(match.group(2) or match.group(3))
            if not pid_alive(pid):
                ip("link", "delete", match.group(1), check=False)


def used_subnets() -> set[int]:
    """Third octets of 10.231.x.0/24 already addressed or routed on this host."""
    out = ip("-4", "-o", "addr", "show", check=False).stdout
    out += ip("-4", "route", "show", "table", "all", check=False).stdout
    return {int(m) for m in re.findall(r"\b10\.231\.(\d+)\.", out)}


@dataclass
class Topology:
    """The bridge, the namespaces and the veth pairs of one run; ``teardown`` removes them."""

    pid: int = field(default_factory=os.getpid)
    octet: int = 0
    bridge: str = ""
    namespaces: list[str] = field(default_factory=list)
    host_ends: list[str] = field(default_factory=list)
    ns_ends: list[str] = field(default_factory=list)

    @property
    def host_address(self) -> str:
        return f"10.231.{self.octet}.1"

    def build(self, count: int) -> None:
        used = used_subnets()
        free = [o for o in range(1, 255) if o not in used]
        if not free:
            raise RuntimeError("no free 10.231.x.0/24 subnet on this host")
        self.octet = free[self.pid % len(free)]
        self.bridge = f"{BRIDGE_PREFIX}{self.pid}"
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(count):
            ns, host_end, ns_end = (
                f"{PREFIX}{self.pid}-{i}",
                f"vm{self.pid}h{i}",
                f"vm{self.pid}n{i}",
            )
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
            self.host_ends.append(host_end)
            self.ns_ends.append(ns_end)
            ip("link", "set", host_end, "master", self.bridge)
            ip("link", "set", host_end, "up")
            ip("-n", ns, "addr", "add", f"10.231.{self.octet}.{10 + i}/24", "dev", ns_end)
            ip("-n", ns, "link", "set", ns_end, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def counters(self, i: int) -> tuple[int, int]:
        """(tx_bytes, rx_bytes) of the veth end inside namespace ``i``."""
        values = []
        for what in ("tx_bytes", "rx_bytes"):
            proc = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.namespaces[i],
                    "cat",
                    f"/sys/class/net/{self.ns_ends[i]}/statistics/{what}",
                ],
                capture_output=True,
                text=True,
                timeout=IP_TIMEOUT_S,
                check=True,
            )
            values.append(int(proc.stdout.strip()))
        return values[0], values[1]

    def teardown(self) -> None:
        for ns in self.namespaces:
            ip("netns", "delete", ns, check=False)
        for host_end in self.host_ends:  # gone with their peers already; make sure
            if ip("link", "show", host_end, check=False).returncode == 0:
                ip("link", "delete", host_end, check=False)
        if self.bridge and ip("link", "show", self.bridge, check=False).returncode == 0:
            ip("link", "delete", self.bridge, check=False)


@pytest.fixture
def topology() -> Iterator[Topology]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    clean_stale()
    topo = Topology()
    try:
        topo.build(PROBES)
        yield topo
    finally:
        topo.teardown()
    leftovers = [ns for ns in topo.namespaces if ns in ip("netns", "list", check=False).stdout]
    assert not leftovers, f"namespaces not removed: {leftovers}"


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Processes]:
    # No MONITOR_* from the caller, and no proxy: 10.231.x.1 is reached directly.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MONITOR_") and not k.lower().endswith("_proxy")
    }
    procs = Processes(tmp_path, env)
    try:
        yield procs
    finally:
        procs.stop_all()
        print(procs.logs())  # shown by pytest when the test failed


def test_probes_in_namespaces_reach_operators_and_collector_across_interfaces(
    topology: Topology, children: Processes, tmp_path: Path
) -> None:
    procs = children
    host = topology.host_address
    sim_port, api_port = free_port(), free_port()
    api = f"http://{host}:{api_port}"
    db_path = tmp_path / "monitor.db"
    procs.env["MONITOR_DATABASE_URL"] = f"sqlite:///{db_path}"
    procs.env["MONITOR_SCORING_INTERVAL_S"] = "1"

    keys = [tmp_path / f"probe-{i}.key" for i in range(PROBES)]
    addresses = [out.strip() for out in procs.run(*(("keygen", "--out", str(k)) for k in keys))]
    registry = tmp_path / "registry.yaml"
    simnet.write_registry(
        registry,
        simnet.DEMO_OPERATORS,
        simnet.demo_chains(),
        url_base=f"http://{host}:{sim_port}",
        probes=[
            {"address": a, "name": f"probe-{i}", "region": f"netns-{i}"}
            for i, a in enumerate(addresses)
        ],
    )
    procs.run(("db", "upgrade"))
    assert f"probes: {PROBES} created" in procs.run(("registry", "apply", str(registry)))[0]

    # Both listen on the bridge address only: reachable from the namespaces and this host.
    procs.start("simnet", "simnet", "--host", host, "--port", str(sim_port))
    procs.start("collector", "serve", "--host", host, "--port", str(api_port))
    wait_for("the simnet", lambda: responds(f"http://{host}:{sim_port}/_control"), procs, 30)
    wait_for("the collector", lambda: responds(f"{api}/healthz"), procs, STARTUP_TIMEOUT_S)

    before = [topology.counters(i) for i in range(PROBES)]
    for i, (ns, key) in enumerate(zip(topology.namespaces, keys, strict=True)):
        procs.start(
            f"probe-{i}",
            "probe",
            "--collector",
            api,
            "--key",
            str(key),
            "--interval",
            str(INTERVAL_S),
            prefix=("ip", "netns", "exec", ns),  # execs: the pid stays python's
        )

    engine = make_engine(f"sqlite:///{db_path}")
    try:

        def batches_per_probe() -> dict[str, int]:
            with session_scope(engine) as session:
                rows = session.execute(
                    select(Probe.address, func.count(Batch.id))
                    .join(Batch, Batch.probe_id == Probe.id)
                    .group_by(Probe.address)
                ).all()
            return {address: count for address, count in rows}

        def ranked() -> dict[str, float] | None:
            if set(batches_per_probe()) != set(addresses):
                return None
            response = httpx.get(
                f"{api}/v1/weights",
                params={"chain_id": simnet.DEMO_CHAIN_ID},
                timeout=5,
                trust_env=False,
            )
            if response.status_code != 200:
                return None
            weights = {w["operator_id"]: w["weight"] for w in response.json()["weights"]}
            if set(weights) != {"alpha", "bravo", "charlie", "delta", "echo"}:
                return None
            alpha_first = all(weights["alpha"] > weights[o] for o in weights if o != "alpha")
            return weights if alpha_first and weights["charlie"] == 0 else None

        weights = wait_for(
            "batches from every probe, alpha first and charlie at 0 in /v1/weights",
            ranked,
            procs,
            PIPELINE_TIMEOUT_S,
        )
        assert weights["alpha"] > 0 and weights["charlie"] == 0, weights
        counts = batches_per_probe()
        assert set(counts) == set(addresses) and all(n >= 1 for n in counts.values()), counts
    finally:
        engine.dispose()

    # The traffic went through each namespace's veth: both directions carried the probe's
    # requests to the operators and the collector, and their answers.
    after = [topology.counters(i) for i in range(PROBES)]
    for i, ((tx0, rx0), (tx1, rx1)) in enumerate(zip(before, after, strict=True)):
        assert tx1 - tx0 > 1000 and rx1 - rx0 > 1000, (topology.namespaces[i], before, after)
