"""What the benchmarks share: a server subprocess watched for CPU time and peak RSS, a minimal
keep-alive HTTP/1.1 load client (cheap, so that the server, not the client, is measured), wrk
with its figures parsed, a throwaway PostgreSQL cluster when no URL is given, and the
benchmarks' one chain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from monitor.db.models import Chain

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def bench_chain() -> Chain:
    """Chain 1 with the registry's default SLA: what every benchmark seeds its endpoints on."""
    return Chain(
        chain_id=1,
        name="bench",
        block_time_s=12,
        confirmations=6,
        sla_availability=0.999,
        sla_latency_p95_ms=500,
        sla_max_lag_blocks=3,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_url(database_url: str | None, name: str = "bench") -> Iterator[str]:
    """``database_url`` as given, or a database in a throwaway cluster stopped on exit."""
    if database_url:
        yield database_url
        return
    sys.path.insert(0, str(ROOT))
    from tests.support.postgres import PostgresCluster

    with PostgresCluster() as cluster:
        cluster.create_database(name)
        yield cluster.url(name)


def fresh_postgres_database(url: str, name: str) -> str:
    """A new empty database beside ``url``'s (dropped first if it exists); its URL."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return u.set(database=name).render_as_string(hide_password=False)


@dataclass
class ProcessStats:
    cpu_s: float  # user + system of the process (its threads included)
    peak_rss_mib: float  # VmHWM: the high-water mark of its resident set


def process_stats(pid: int) -> ProcessStats:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return ProcessStats(cpu, hwm)


class Server:
    """A server process on loopback (``argv``), started, waited for (GET ``ready_path``) and
    always stopped (SIGINT, then SIGKILL); ``stats()`` reads its CPU time and peak RSS."""

    def __init__(self, argv: Sequence[str], *, port: int, env: dict[str, str], log: Path):
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
        out.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv} exited: {self.log.read_text()[-3000:]}")
            if self._healthy():
                # Another program's server on the port (a port taken between free_port and the
                # bind) would answer too: ours must still be running, and say what /healthz says.
                time.sleep(0.5)
                if self.proc.poll() is None and self._healthy():
                    return self
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.argv} did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=1)
            return response.status_code == 200 and response.json() == {"status": "ok"}
        except (httpx.HTTPError, ValueError):
            return False

    def stats(self) -> ProcessStats:
        assert self.proc is not None
        return process_stats(self.proc.pid)

    def loaded(self, *names: str) -> dict[str, bool]:
        """Which of ``names`` (e.g. uvloop, httptools) the process has mapped (its .so files)."""
        assert self.proc is not None
        maps = Path(f"/proc/{self.proc.pid}/maps").read_text()
        return {name: f"/{name}/" in maps for name in names}

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def monitor_serve(database_url: str, workdir: Path, **env: str) -> Server:
    """``monitor serve`` (uvicorn with uvloop and httptools) on a free loopback port; its jobs
    scheduled an hour apart so that they run once, at start, and not during the measurement."""
    port = free_port()
    environment = {
        "MONITOR_DATABASE_URL": database_url,
        "MONITOR_HOST": "127.0.0.1",
        "MONITOR_PORT": str(port),
        "MONITOR_SERVICE_KEY_FILE": str(workdir / "collector.key"),
        "MONITOR_SCORING_INTERVAL_S": "3600",
        "MONITOR_ROLLUP_INTERVAL_S": "3600",
        "MONITOR_ATTEST_DAILY": "false",
        **env,
    }
    monitor = str(Path(PYTHON).parent / "monitor")
    return Server([monitor, "serve"], port=port, env=environment, log=workdir / "serve.log")


# --- a cheap HTTP/1.1 load client -----------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return status, body


def post_request(path: str, body: bytes, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _post_all(port: int, path: str, bodies: Sequence[bytes], clients: int) -> list[int]:
    queue = list(reversed(bodies))
    statuses: list[int] = []
    errors: list[bytes] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                status, answer = await _exchange(
                    reader, writer, post_request(path, queue.pop(), port)
                )
                statuses.append(status)
                if status != 200 and len(errors) < 3:
                    errors.append(answer[:300])
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    if errors:
        print(f"  refused: {errors}", file=sys.stderr)
    return statuses


def post_all(port: int, path: str, bodies: Sequence[bytes], clients: int) -> list[int]:
    """POST every body once over ``clients`` keep-alive connections; the statuses."""
    return asyncio.run(_post_all(port, path, bodies, clients))


# --- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkFigures:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, *, seconds: int, connections: int, threads: int = 1) -> WrkFigures:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\n\s*50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\n\s*99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return WrkFigures(rps, p50, p99, total, int(bad.group(1)) if bad else 0)
