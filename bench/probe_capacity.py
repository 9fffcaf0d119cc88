"""Probe precision, capacity and cost against Prometheus' blackbox_exporter, in one run.

    .venv/bin/python bench/probe_capacity.py [--quick | --smoke] [--ladder 250,2000,...]
        [--delay-ms 50] [--interval 10] [--rounds 4]

N simulated JSON-RPC nodes on 127.0.0.1 (bench/_probe_nodes.py: one port each, every answer held
``--delay-ms``; several processes past 4,000 endpoints, for the file descriptor limit), checked at
``--interval`` by, in turn:

* the real ``monitor probe`` command (its measuring process included), with every default check,
  delivering its signed batches to a stand-in collector in this process (it serves the targets and
  reads each batch's results);
* blackbox_exporter (``apt-get install prometheus-blackbox-exporter``) with a JSON-RPC POST module
  (eth_blockNumber), scraped like Prometheus does: each target once per interval, spread evenly.

For each N: the latency error (the latency a result reports, or blackbox's
probe_http_duration_seconds summed over its phases, minus the injected delay: p50, p95, p99),
whether every round had every endpoint (and how late its batch came after its window closed), CPU
seconds per endpoint per round (the probe's processes together from its first batch to its last:
the round where the scheduled checks fall due together is the second, and is counted) against
blackbox's CPU per probe, the peak memory of all the probe's processes together, and the nodes'
own CPU and lateness (so the server side is seen not to be the bottleneck). Then the ratios.

``--smoke``: 40 endpoints at a 1 s interval, 2 rounds: that it runs to the end and prints its
table (the suite runs it; no figure is judged).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.support import free_port, process_stats  # noqa: E402
from monitor.probe.schedule import Schedule  # noqa: E402
from monitor.serving import ServerThread  # noqa: E402

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
NODES_PER_PROCESS = 4000  # listening sockets + the probe's connections, under 20,000 descriptors
BODY = '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
BLACKBOX_CONFIG = f"""\
modules:
  jsonrpc:
    prober: http
    timeout: 5s
    http:
      method: POST
      headers:
        Content-Type: application/json
      body: '{BODY}'
      valid_status_codes: [200]
      fail_if_body_not_matches_regexp: ['"result"']
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""


@dataclass
class Row:
    tool: str
    n: int
    rounds: int = 0
    whole_rounds: int = 0  # rounds with a result for every endpoint
    close_lag_s: list[float] = field(default_factory=list)  # batch received - window end
    checks: int = 0
    ok: int = 0
    cpu_s: float = 0.0
    cpu_rounds: int = 0  # rounds the CPU figure covers
    errors_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0  # peak RSS, summed over the processes (shared pages counted in each)
    pss_mb: float | None = None  # peak of the processes' summed PSS (shared pages split)
    requests: int = 0  # the nodes served, over the rounds the CPU figure covers
    nodes_cpu_pct: float = 0.0
    nodes_late_p95_ms: float | None = None
    warnings: list[str] = field(default_factory=list)  # the probe's own, from its log

    @property
    def cpu_per_check_ms(self) -> float:
        """CPU ms per endpoint per round (blackbox: per probe)."""
        return 1000 * self.cpu_s / max(1, self.cpu_rounds * self.n)

    def err(self, q: float) -> float | None:
        if not self.errors_ms:
            return None
        e = sorted(self.errors_ms)
        return e[min(len(e) - 1, int(q * len(e)))]


class Nodes:
    """The simulated nodes: one process per NODES_PER_PROCESS endpoints, stopped on exit."""

    def __init__(self, endpoints: int, delay_ms: float) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.ports: list[int] = []
        stats_ports = []
        for start in range(0, endpoints, NODES_PER_PROCESS):
            count = min(NODES_PER_PROCESS, endpoints - start)
            proc = subprocess.Popen(
                [
                    *(sys.executable, str(HERE / "_probe_nodes.py")),
                    *("--endpoints", str(count), "--delay-ms", str(delay_ms)),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            self.procs.append(proc)
            ports = json.loads(proc.stdout.readline())["ports"]
            self.ports += ports
            stats_ports.append(ports[0])
        self._stats_ports = stats_ports

    def stats(self) -> dict[str, Any]:
        """The nodes' CPU, wall time, requests and lateness since the last call (reset)."""
        reports = [
            httpx.get(f"http://127.0.0.1:{p}/_stats", timeout=30).json() for p in self._stats_ports
        ]
        late = [r["late_ms_p95"] for r in reports if r["late_ms_p95"] is not None]
        return {
            "cpu_s": sum(r["cpu_s"] for r in reports),
            "wall_s": max(r["wall_s"] for r in reports),
            "requests": sum(r["requests"] for r in reports),
            "late_ms_p95": max(late) if late else None,
        }

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def targets_doc(ports: list[int]) -> dict[str, Any]:
    endpoints = [
        {"endpoint_id": i + 1, "operator_id": f"op{i}", "url": f"http://127.0.0.1:{port}/"}
        for i, port in enumerate(ports)
    ]
    chain = {"chain_id": 1, "name": "bench", "block_time_s": 12.0, "confirmations": 6}
    return {"chains": [{**chain, "endpoints": endpoints}]}


class Collector:
    """A stand-in collector: ``GET /v1/targets`` and ``POST /v1/batches``, each batch's results
    kept with the time it came (unverified: what is measured here is the probe)."""

    def __init__(self) -> None:
        self.targets: dict[str, Any] = {"chains": []}
        self.batches: list[tuple[float, list[dict[str, Any]]]] = []
        self.lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/v1/targets", self._targets),
                Route("/v1/batches", self._batch, methods=["POST"]),
            ]
        )
        self.server = ServerThread(app, name="bench-collector")

    async def _targets(self, request: Request) -> Response:
        return JSONResponse(self.targets)

    async def _batch(self, request: Request) -> Response:
        body = json.loads(await request.body())
        with self.lock:
            self.batches.append((time.time(), body["results"]))
        message = body["message"]
        return JSONResponse(
            {
                "batch_id": message["batchId"],
                "probe": message["probe"],
                "results": len(body["results"]),
                "duplicate": False,
            }
        )


def descendants(pid: int) -> list[int]:
    """``pid`` and the processes it started (the probe's measuring process)."""
    out = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def pss_mb(pids: list[int]) -> float:
    """The processes' proportional set sizes summed: what they hold together, shared pages (the
    interpreter, libraries) counted once."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1000


class PssPeak(threading.Thread):
    """The highest summed PSS of ``pids``, sampled every 0.2 s until ``stop``."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, pss_mb(self.pids))

    def stop(self) -> float:
        self.done.set()
        self.join(5)
        return self.peak


def probe_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that has ended counts no more
            total += process_stats(pid).cpu_s
    return total


def run_probe(
    nodes: Nodes,
    collector: Collector,
    n: int,
    *,
    rounds: int,
    interval: float,
    delay_ms: float,
    tmp: Path,
) -> Row:
    """``monitor probe`` for ``rounds`` whole rounds after its first, against N nodes."""
    collector.targets = targets_doc(nodes.ports[:n])
    with collector.lock:
        collector.batches.clear()
    account = Account.create()
    key = tmp / f"probe-{n}.key"
    key.write_text(account.key.hex() + "\n")
    key.chmod(0o600)
    schedule = Schedule(interval, bytes.fromhex(account.address[2:]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    monitor = str(Path(sys.executable).parent / "monitor")
    argv = [monitor, "probe", "--collector", collector.server.url, "--key", str(key)]
    argv += ["--interval", str(interval)]
    log = (tmp / f"probe-{n}.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    row = Row(tool="monitor probe", n=n)
    try:
        deadline = time.monotonic() + (rounds + 3) * interval + 60

        def batches() -> int:
            with collector.lock:
                return len(collector.batches)

        while batches() < 1:  # the first round: connections made, the reference learnt
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no first batch: {(tmp / f'probe-{n}.log').read_text()}")
            time.sleep(0.02)
        pids = descendants(proc.pid)
        pss = PssPeak(pids)
        pss.start()
        cpu0 = probe_cpu_s(pids)
        nodes.stats()  # reset
        while batches() < 1 + rounds:
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        row.cpu_s = probe_cpu_s(pids) - cpu0
        row.cpu_rounds = batches() - 1
        row.rss_mb = sum(_hwm(pid) for pid in pids)
        row.pss_mb = pss.stop()
        nodes_figures(row, nodes.stats())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3 * interval + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    for line in (tmp / f"probe-{n}.log").read_text(errors="replace").splitlines():
        if " WARNING " in line or " ERROR " in line:
            row.warnings.append(line)
    with collector.lock:
        received = list(collector.batches)
    for at, results in received:
        row.rounds += 1
        row.whole_rounds += len({r["endpoint_id"] for r in results}) == n
        observed = [r["observed_at_ms"] for r in results]
        if observed:
            window = schedule.round_of(min(observed) / 1000)
            row.close_lag_s.append(at - schedule.start(window + 1))
        row.checks += len(results)
        for r in results:
            if r["latency_us"] is not None:
                row.ok += 1
                row.errors_ms.append(r["latency_us"] / 1000 - delay_ms)
    return row


def _hwm(pid: int) -> float:
    try:
        return process_stats(pid).peak_rss_mib * 1024 * 1024 / 1e6
    except OSError:
        return 0.0


def nodes_figures(row: Row, stats: dict[str, Any]) -> None:
    row.requests = stats["requests"]
    row.nodes_cpu_pct = 100 * stats["cpu_s"] / max(stats["wall_s"], 1e-9)
    row.nodes_late_p95_ms = stats["late_ms_p95"]


def parse_probe(text: str) -> tuple[bool, float]:
    """(probe_success, the request's duration in s: probe_http_duration_seconds summed)."""
    success, duration = False, 0.0
    for line in text.splitlines():
        if line.startswith("probe_success "):
            success = float(line.split()[1]) == 1.0
        elif line.startswith("probe_http_duration_seconds{"):
            duration += float(line.split()[1])
    return success, duration


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """One GET on a kept-alive connection: the body (Content-Length or chunked)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if b"transfer-encoding: chunked" in head:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return body
    length = re.search(rb"\r\ncontent-length: *(\d+)", head)
    return await reader.readexactly(int(length.group(1))) if length else b""


async def scrape_all(port: int, targets: list[str], intervals: int, interval: float) -> list[Any]:
    """Each target once per interval, spread evenly, concurrently (Prometheus' scrape loops),
    over a pool of kept-alive connections: a client cheap enough not to take the CPU the
    exporter is measured with (httpx here took most of a core at 10,000 targets)."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(200):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    header = f"X-Prometheus-Scrape-Timeout-Seconds: {interval:g}\r\n"

    async def one(target: str, at: float) -> tuple[bool, float] | None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        query = urlencode({"target": target, "module": "jsonrpc"})
        request = (
            f"GET /probe?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{header}\r\n"
        ).encode()
        reader, writer = await pool.get()
        try:
            async with asyncio.timeout(interval):
                return parse_probe((await _get(reader, writer, request)).decode())
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return None
        finally:
            pool.put_nowait((reader, writer))

    step = interval / len(targets)
    try:
        return await asyncio.gather(
            *(
                one(t, start + k * interval + i * step)
                for k in range(intervals)
                for i, t in enumerate(targets)
            )
        )
    finally:
        while not pool.empty():
            pool.get_nowait()[1].close()


def run_blackbox(
    nodes: Nodes, n: int, intervals: int, interval: float, delay_ms: float, tmp: Path
) -> Row:
    config = tmp / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(BLACKBOX, f"--config.file={config}"),
            *(f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    row = Row(tool="blackbox_exporter", n=n)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("blackbox_exporter did not start") from None
                time.sleep(0.1)
        targets = [f"http://127.0.0.1:{p}/" for p in nodes.ports[:n]]
        nodes.stats()
        cpu0 = process_stats(proc.pid).cpu_s
        outcomes = asyncio.run(scrape_all(port, targets, intervals, interval))
        row.cpu_s = process_stats(proc.pid).cpu_s - cpu0
        row.cpu_rounds = intervals
        row.rss_mb = _hwm(proc.pid)
        nodes_figures(row, nodes.stats())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    row.rounds = row.whole_rounds = intervals
    row.checks = len(outcomes)
    for outcome in outcomes:
        if outcome is not None and outcome[0]:
            row.ok += 1
            row.errors_ms.append(outcome[1] * 1000 - delay_ms)
    if row.ok < row.checks:
        row.whole_rounds = 0
    return row


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'tool':<18} {'N':>6} {'rounds':>6} {'whole':>5} {'close lag s':>11} {'ok %':>6} "
        f"{'err p50 ms':>10} {'err p95 ms':>10} {'err p99 ms':>10} {'req/check':>9} "
        f"{'CPU ms/check':>12} "
        f"{'peak RSS MB':>11} {'peak PSS MB':>11} {'nodes CPU %':>11} {'nodes late p95':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        lag = max(r.close_lag_s) if r.close_lag_s else None
        print(
            f"{r.tool:<18} {r.n:>6} {r.rounds:>6} {r.whole_rounds:>5} {fmt(lag):>11} "
            f"{100 * r.ok / max(1, r.checks):>6.1f} {fmt(r.err(0.5)):>10} {fmt(r.err(0.95)):>10} "
            f"{fmt(r.err(0.99)):>10} {r.requests / max(1, r.cpu_rounds * r.n):>9.2f} "
            f"{r.cpu_per_check_ms:>12.3f} {r.rss_mb:>11.0f} "
            f"{fmt(r.pss_mb, '.0f'):>11} "
            f"{r.nodes_cpu_pct:>11.1f} {fmt(r.nodes_late_p95_ms):>14}"
        )


def print_ratios(rows: list[Row]) -> None:
    print()
    print("monitor probe / blackbox_exporter, same N, same run:")
    for r in rows:
        if r.tool == "blackbox_exporter":
            continue
        bb = next((b for b in rows if b.tool == "blackbox_exporter" and b.n == r.n), None)
        if bb is None or not bb.errors_ms or not r.errors_ms:
            continue
        cpu_ratio = r.cpu_per_check_ms / max(bb.cpu_per_check_ms, 1e-9)
        print(
            f"  N={r.n:<6} CPU per check {cpu_ratio:5.2f}x"
            f"; error p95 {fmt(r.err(0.95))} vs {fmt(bb.err(0.95))} ms, "
            f"p99 {fmt(r.err(0.99))} vs {fmt(bb.err(0.99))} ms; "
            f"peak memory {r.rss_mb:.0f} MB RSS summed ({fmt(r.pss_mb, '.0f')} MB PSS) vs "
            f"{bb.rss_mb:.0f} MB; "
            f"every round whole: {r.whole_rounds == r.rounds} ({r.whole_rounds}/{r.rounds})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=250,2000, 2 rounds (~2 min)")
    parser.add_argument("--smoke", action="store_true", help="N=40 at 1 s, 2 rounds (seconds)")
    parser.add_argument("--ladder", help="comma-separated N (default 250,500,1000,2000,5000,10000)")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--interval", type=float, default=None, help="seconds (default 10)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 4)")
    args = parser.parse_args()
    default_ladder = "250,500,1000,2000,5000,10000"
    if args.smoke:
        default_ladder, interval, rounds = "40", 1.0, 2
    elif args.quick:
        default_ladder, interval, rounds = "250,2000", 10.0, 2
    else:
        interval, rounds = 10.0, 4
    interval = args.interval or interval
    rounds = args.rounds or rounds
    ladder = [int(n) for n in (args.ladder or default_ladder).split(",")]
    intervals = max(1, rounds // 2)
    have_blackbox = shutil.which(BLACKBOX) is not None
    if not have_blackbox:
        print(f"{BLACKBOX} not found (apt-get install prometheus-blackbox-exporter): skipped")
    print(
        f"{os.cpu_count()} cores; delay {args.delay_ms:g} ms; interval {interval:g} s; "
        f"monitor probe: {rounds} rounds per N after its first; "
        f"blackbox_exporter: {intervals} intervals per N",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="probe-capacity-"))
    nodes = Nodes(max(ladder), args.delay_ms)
    collector = Collector()
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with collector.server:
            for n in ladder:
                rows.append(
                    run_probe(
                        nodes,
                        collector,
                        n,
                        rounds=rounds,
                        interval=interval,
                        delay_ms=args.delay_ms,
                        tmp=tmp,
                    )
                )
                if have_blackbox:
                    rows.append(run_blackbox(nodes, n, intervals, interval, args.delay_ms, tmp))
                print(f"  N={n} done ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        nodes.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(rows)
    print_ratios(rows)
    print()
    for r in rows:
        if r.close_lag_s:
            lags = ", ".join(f"{lag:.2f}" for lag in r.close_lag_s)
            print(
                f"{r.tool} N={r.n}: each round's batch came this long after its window (s): {lags}"
            )
        for line in r.warnings[:5]:
            print(f"  the probe logged: {line}")
    if rows:
        worst = max(r.nodes_cpu_pct for r in rows)
        print(f"\nsimulated nodes: at most {worst:.0f}% of a core (not the bottleneck below ~90%)")
        lateness = [r.nodes_late_p95_ms for r in rows if r.nodes_late_p95_ms is not None]
        if lateness:
            print(f"median of the nodes' own lateness p95: {statistics.median(lateness):.2f} ms")


if __name__ == "__main__":
    main()
