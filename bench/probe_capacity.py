"""Probe capacity and accuracy against Prometheus' blackbox_exporter, side by side in one run.

    .venv/bin/python bench/probe_capacity.py [--quick] [--ladder 250,500,...] [--delay-ms 50]
        [--transport httpx|aiohttp|both]

N simulated JSON-RPC nodes on 127.0.0.1 (bench/_probe_nodes.py: one port each, every answer held
``--delay-ms``), probed at a 10 s interval by, in turn:

* one real probe process (bench/_probe_worker.py: the ProbeAgent's rounds, every default check,
  signing, the outbox), on httpx's own transport and on httpx-aiohttp's;
* blackbox_exporter (``apt-get install prometheus-blackbox-exporter``) with a JSON-RPC POST module
  (eth_blockNumber), scraped like Prometheus would: each target once per interval, the scrapes
  spread evenly over it.

For each N: the longest round (must stay under the interval), CPU seconds per 1000 checks (a check
is one endpoint in one round; the probe makes several calls per check, blackbox one) and per 1000
requests, the latency measurement error (measured minus injected delay, p50/p95: the probe's
eth_blockNumber latency, blackbox's probe_http_duration_seconds summed over its phases), peak RSS,
and the nodes' own CPU and lateness (so the server side is seen not to be the bottleneck). Then
the largest N each finishes its rounds in time, and the ratios probe / blackbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

HERE = Path(__file__).resolve().parent
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
TICKS = os.sysconf("SC_CLK_TCK")
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
    max_round_s: float | None = None
    round_walls: list[float] = field(default_factory=list)
    round_phases: list[dict[str, float]] = field(default_factory=list)
    checks: int = 0
    ok: int = 0
    requests: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    errors_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    nodes_cpu_pct: float = 0.0
    nodes_late_p95_ms: float | None = None

    @property
    def cpu_per_1000_checks(self) -> float:
        return 1000 * self.cpu_s / max(1, self.checks)

    @property
    def cpu_per_1000_requests(self) -> float:
        return 1000 * self.cpu_s / max(1, self.requests)

    def err(self, q: float) -> float | None:
        if not self.errors_ms:
            return None
        e = sorted(self.errors_ms)
        return e[min(len(e) - 1, int(q * len(e)))]

    def in_time(self, interval: float) -> bool:
        if self.checks == 0 or self.ok < 0.99 * self.checks:
            return False
        if self.max_round_s is not None:
            return self.max_round_s <= interval
        return self.cpu_s / max(self.wall_s, 1e-9) < 0.95  # blackbox: keeps up within a core


class Nodes:
    """The simulated nodes' process: ports, and its counters read (and reset) between runs."""

    def __init__(self, endpoints: int, delay_ms: float) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, str(HERE / "_probe_nodes.py")),
                *("--endpoints", str(endpoints), "--delay-ms", str(delay_ms)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.ports[0]}/_stats", timeout=10).json()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def targets_doc(ports: list[int]) -> dict[str, Any]:
    endpoints = [
        {"endpoint_id": i + 1, "operator_id": f"op{i}", "url": f"http://127.0.0.1:{port}/"}
        for i, port in enumerate(ports)
    ]
    chain = {"chain_id": 1, "name": "bench", "block_time_s": 12.0, "confirmations": 6}
    return {"chains": [{**chain, "endpoints": endpoints}]}


def nodes_figures(row: Row, stats: dict[str, Any]) -> None:
    row.requests = stats["requests"]
    row.nodes_cpu_pct = 100 * stats["cpu_s"] / max(stats["wall_s"], 1e-9)
    row.nodes_late_p95_ms = stats["late_ms_p95"]


def run_probe(
    nodes: Nodes,
    n: int,
    transport: str,
    rounds: int,
    interval: float,
    delay_ms: float,
    tmp: Path,
    loop: str = "asyncio",
) -> Row:
    path = tmp / f"targets-{n}.json"
    path.write_text(json.dumps(targets_doc(nodes.ports[:n])))
    command = [sys.executable, str(HERE / "_probe_worker.py"), str(path)]
    command += ["--rounds", str(rounds), "--interval", str(interval), "--transport", transport]
    command += ["--loop", loop]
    row = Row(tool=f"probe ({transport})" + ("" if loop == "asyncio" else f" {loop}"), n=n)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    nodes.stats()  # reset, after the worker's imports (they are not a round's work)
    try:
        out, _ = proc.communicate(timeout=rounds * interval * 3 + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    nodes_figures(row, nodes.stats())
    for line in out.splitlines():
        r = json.loads(line)
        row.rounds += 1
        row.max_round_s = max(row.max_round_s or 0.0, r["wall_s"])
        row.round_walls.append(r["wall_s"])
        row.round_phases.append(r.get("phases_s", {}))
        row.checks += r["results"]
        row.ok += len(r["latencies_us"])
        row.cpu_s += r["cpu_s"]
        row.wall_s += max(interval, r["wall_s"])
        row.errors_ms += [us / 1000 - delay_ms for us in r["latencies_us"]]
        row.rss_mb = r["maxrss_kb"] / 1024
    return row


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse_probe(text: str) -> tuple[bool, float]:
    """(probe_success, the request's duration in s: probe_http_duration_seconds summed)."""
    success, duration = False, 0.0
    for line in text.splitlines():
        if line.startswith("probe_success "):
            success = float(line.split()[1]) == 1.0
        elif line.startswith("probe_http_duration_seconds{"):
            duration += float(line.split()[1])
    return success, duration


async def scrape_all(port: int, targets: list[str], intervals: int, interval: float) -> list[Any]:
    """Each target once per interval, spread evenly, concurrently (Prometheus' scrape loops)."""
    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=interval)
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": str(interval)}
    url = f"http://127.0.0.1:{port}/probe"
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5

    async def one(target: str, at: float) -> tuple[bool, float] | None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            async with session.get(
                url, params={"target": target, "module": "jsonrpc"}, headers=headers
            ) as response:
                return parse_probe(await response.text())
        except (aiohttp.ClientError, TimeoutError):
            return None

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        step = interval / len(targets)
        return await asyncio.gather(
            *(
                one(t, start + k * interval + i * step)
                for k in range(intervals)
                for i, t in enumerate(targets)
            )
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        cpu0, wall0 = proc_cpu_s(proc.pid), time.monotonic()
        outcomes = asyncio.run(scrape_all(port, targets, intervals, interval))
        row.cpu_s = proc_cpu_s(proc.pid) - cpu0
        row.wall_s = time.monotonic() - wall0
        row.rss_mb = proc_hwm_mb(proc.pid)
        nodes_figures(row, nodes.stats())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    row.rounds = intervals
    row.checks = len(outcomes)
    for outcome in outcomes:
        if outcome is not None and outcome[0]:
            row.ok += 1
            row.errors_ms.append(outcome[1] * 1000 - delay_ms)
    return row


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row], interval: float) -> None:
    head = (
        f"{'tool':<18} {'N':>5} {'max round s':>11} {'ok %':>6} {'req/check':>9} "
        f"{'CPU % core':>10} {'CPU s/1k checks':>15} {'CPU s/1k req':>12} "
        f"{'err p50 ms':>10} {'err p95 ms':>10} {'RSS MB':>7} {'nodes CPU %':>11} "
        f"{'nodes late p95':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.tool:<18} {r.n:>5} {fmt(r.max_round_s):>11} "
            f"{100 * r.ok / max(1, r.checks):>6.1f} {r.requests / max(1, r.checks):>9.2f} "
            f"{100 * r.cpu_s / max(r.wall_s, 1e-9):>10.1f} {r.cpu_per_1000_checks:>15.3f} "
            f"{r.cpu_per_1000_requests:>12.3f} {fmt(r.err(0.5)):>10} {fmt(r.err(0.95)):>10} "
            f"{r.rss_mb:>7.0f} {r.nodes_cpu_pct:>11.1f} {fmt(r.nodes_late_p95_ms):>14}"
        )


def print_summary(rows: list[Row], interval: float, tools: list[str]) -> None:
    print()
    for tool in tools:
        fits = [r.n for r in rows if r.tool == tool and r.in_time(interval)]
        print(f"largest N in time at {interval:g} s, {tool}: {max(fits) if fits else 'none'}")
    print()
    print("ratios probe / blackbox_exporter (same N, same run):")
    for tool in tools:
        if tool == "blackbox_exporter":
            continue
        for r in rows:
            if r.tool != tool:
                continue
            bb = next((b for b in rows if b.tool == "blackbox_exporter" and b.n == r.n), None)
            if bb is None or not bb.checks or not bb.errors_ms or not r.errors_ms:
                continue
            print(
                f"  {tool:<16} N={r.n:<5} CPU per check "
                f"{r.cpu_per_1000_checks / max(bb.cpu_per_1000_checks, 1e-9):5.2f}x, "
                f"per request {r.cpu_per_1000_requests / max(bb.cpu_per_1000_requests, 1e-9):5.2f}x"
                f", error p50 {fmt(r.err(0.5))} vs {fmt(bb.err(0.5))} ms, "
                f"p95 {fmt(r.err(0.95))} vs {fmt(bb.err(0.95))} ms"
            )
    transports = [t for t in tools if t.startswith("probe")]
    if len(transports) == 2:
        print()
        print("httpx-aiohttp / httpx (same N):")
        for r in rows:
            if r.tool != transports[1]:
                continue
            base = next((b for b in rows if b.tool == transports[0] and b.n == r.n), None)
            if base is None or not base.checks or not r.checks:
                continue
            print(
                f"  N={r.n:<5} CPU per check "
                f"{r.cpu_per_1000_checks / max(base.cpu_per_1000_checks, 1e-9):5.2f}x, "
                f"max round {fmt(r.max_round_s)} vs {fmt(base.max_round_s)} s, "
                f"error p95 {fmt(r.err(0.95))} vs {fmt(base.err(0.95))} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=500,2000, fewer rounds (~2 min)")
    parser.add_argument(
        "--ladder", help="comma-separated N (default 250,500,1000,1500,2000,3000,4000)"
    )
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--transport", choices=["httpx", "aiohttp", "both"], default="both")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="uvloop",
        help="the probe's event loop (`monitor probe` runs uvloop when installed)",
    )
    args = parser.parse_args()
    default_ladder = "500,2000" if args.quick else "250,500,1000,1500,2000,3000,4000"
    ladder = [int(n) for n in (args.ladder or default_ladder).split(",")]
    rounds, intervals = (2, 1) if args.quick else (3, 2)
    transports = ["httpx", "aiohttp"] if args.transport == "both" else [args.transport]
    suffix = "" if args.loop == "asyncio" else f" {args.loop}"
    tools = [f"probe ({t}){suffix}" for t in transports] + ["blackbox_exporter"]
    have_blackbox = shutil.which(BLACKBOX) is not None
    if not have_blackbox:
        print(f"{BLACKBOX} not found (apt-get install prometheus-blackbox-exporter): skipped")
        tools.remove("blackbox_exporter")
    print(
        f"{os.cpu_count()} cores; delay {args.delay_ms:g} ms; interval {args.interval:g} s; "
        f"probe: {rounds} rounds per N (the first runs every scheduled check); "
        f"blackbox: {intervals} intervals per N",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="probe-capacity-"))
    nodes = Nodes(max(ladder), args.delay_ms)
    rows: list[Row] = []
    over: set[str] = set()  # tools already past capacity: larger N is not run
    started = time.monotonic()
    try:
        for n in ladder:
            for transport in transports:
                tool = f"probe ({transport}){suffix}"
                if tool in over:
                    continue
                row = run_probe(
                    nodes, n, transport, rounds, args.interval, args.delay_ms, tmp, args.loop
                )
                rows.append(row)
                if not row.in_time(args.interval):
                    over.add(tool)
            if have_blackbox and "blackbox_exporter" not in over:
                row = run_blackbox(nodes, n, intervals, args.interval, args.delay_ms, tmp)
                rows.append(row)
                if not row.in_time(args.interval):
                    over.add("blackbox_exporter")
            print(f"  N={n} done ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        nodes.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print_table(rows, args.interval)
    print_summary(rows, args.interval, tools)
    print()
    for r in rows:
        if r.round_walls:
            walls = ", ".join(f"{w:.2f}" for w in r.round_walls)
            print(f"rounds of {r.tool} at N={r.n}: {walls} s")
            for i, phases in enumerate(r.round_phases):
                busy = {k: v for k, v in phases.items() if v >= 0.01}
                print(
                    f"    round {i + 1} checks (s): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
                )
    if rows:
        worst = max(r.nodes_cpu_pct for r in rows)
        print(f"\nsimulated nodes: at most {worst:.0f}% of a core (not the bottleneck below ~90%)")
        print(
            f"median of the nodes' own lateness p95: "
            f"{statistics.median(r.nodes_late_p95_ms or 0 for r in rows):.2f} ms"
        )


if __name__ == "__main__":
    main()
