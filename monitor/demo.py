"""``make demo``: the whole pipeline on loopback, each part a process started through the CLI.

simnet (four operators: healthy, lagging, wrong fork, slow) <- three probes -> collector (SQLite)
-> scores and weights, printed as a live table until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from monitor import simnet
from monitor.db.migrate import upgrade
from monitor.db.session import make_engine, session_scope
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.signing.keys import generate_key

REGIONS = ["eu-west", "us-east", "ap-south"]
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Children started through the real CLI; all stopped on exit, whatever happens."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
            )
        self.children.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}); see {self.workdir}/{name}.log"
                )

    def stop_all(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_until_up(url: str, procs: Processes) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {STARTUP_TIMEOUT_S:g} s")


def _fmt(value: Any, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def render_table(scores: dict[str, Any]) -> str:
    header = (
        f"{'operator':<10} {'status':<9} {'avail':>6} {'p95 ms':>8} {'lag blk':>7} "
        f"{'lag s':>6} {'correct':>7} {'score':>6} {'weight':>7}  reasons"
    )
    lines = [
        f"chain {scores['chain_id']}, window {scores['window']}, as of {scores['as_of']}",
        header,
        "-" * len(header),
    ]
    for s in sorted(scores["scores"], key=lambda s: -s["weight"]):
        lines.append(
            f"{s['operator_id']:<10} {s['status']:<9} {_fmt(s['availability'], '.3f'):>6} "
            f"{_fmt(s['latency_p95_ms'], '.1f'):>8} {_fmt(s['lag_blocks'], '.1f'):>7} "
            f"{_fmt(s['lag_seconds'], '.1f'):>6} {_fmt(s['correctness'], '.2f'):>7} "
            f"{_fmt(s['score'], '.3f'):>6} {s['weight']:>7.3f}  {','.join(s['reasons'])}"
        )
    return "\n".join(lines)


def expected_ranking(scores: dict[str, Any]) -> list[str]:
    """What the demo promises; empty when it holds, else what does not."""
    w = {s["operator_id"]: s["weight"] for s in scores["scores"]}
    by_id = {s["operator_id"]: s for s in scores["scores"]}
    problems = []
    if w.get("charlie", 1) != 0:
        problems.append("the wrong-fork operator (charlie) should have weight 0")
    if w.get("echo", 1) != 0:
        problems.append("the lying-head operator (echo) should have weight 0")
    elif "head_missing" not in by_id["echo"]["reasons"]:
        problems.append("the lying-head operator (echo) should be flagged head_missing")
    if by_id.get("alpha", {}).get("lag_blocks") not in (0, 0.0):
        # echo's invented head must not become the reference and make honest nodes look late
        problems.append("the healthy operator (alpha) should show no lag")
    for other in ("bravo", "delta"):
        if not w.get("alpha", 0) > w.get(other, 1):
            problems.append(f"the healthy operator (alpha) should outrank {other}")
    return problems


def run_demo(*, workdir: Path, duration_s: float | None = None, check: bool = False) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    database_url = f"sqlite:///{workdir.resolve() / 'monitor.db'}"
    sim_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"

    keys = [workdir / f"probe-{i + 1}.key" for i in range(3)]
    probes = [
        {"address": generate_key(k), "name": f"probe-{REGIONS[i]}", "region": REGIONS[i]}
        for i, k in enumerate(keys)
    ]
    chains = simnet.demo_chains()
    registry_file = workdir / "registry.yaml"
    simnet.write_registry(
        registry_file,
        simnet.DEMO_OPERATORS,
        chains,
        url_base=f"http://127.0.0.1:{sim_port}",
        probes=probes,
    )
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(registry_file))
    engine.dispose()

    env = {
        **os.environ,
        "MONITOR_DATABASE_URL": database_url,
        # The collector's signing key lives with the demo's other keys, not in the checkout.
        "MONITOR_SERVICE_KEY_FILE": str(workdir.resolve() / "collector.key"),
        "MONITOR_SCORING_INTERVAL_S": "2",
        "MONITOR_INTERVAL_S": "2",
    }
    procs = Processes(workdir, env)
    final: dict[str, Any] | None = None
    try:
        procs.start("simnet", "simnet", "--port", str(sim_port))
        procs.start("collector", "serve", "--port", str(api_port))
        wait_until_up(f"http://127.0.0.1:{sim_port}/_control", procs)
        wait_until_up(f"{api}/healthz", procs)
        for i, key in enumerate(keys):
            procs.start(f"probe-{i + 1}", "probe", "--collector", api, "--key", str(key))
        print(f"simulated operators: http://127.0.0.1:{sim_port}/<id>   logs and keys: {workdir}/")
        print(f"API docs: {api}/docs   weights: {api}/v1/weights?chain_id={simnet.DEMO_CHAIN_ID}")
        print("Ctrl-C stops everything.\n", flush=True)
        started = time.monotonic()
        while duration_s is None or time.monotonic() - started < duration_s:
            procs.check_alive()
            response = httpx.get(
                f"{api}/v1/scores", params={"chain_id": simnet.DEMO_CHAIN_ID}, timeout=5
            )
            if response.status_code == 200:
                final = response.json()
                clear = "\x1b[H\x1b[J" if sys.stdout.isatty() else ""
                print(f"{clear}{render_table(final)}\n", flush=True)
            time.sleep(2)
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        procs.stop_all()
    if check:
        problems = ["no scores were served"] if final is None else expected_ranking(final)
        for problem in problems:
            print(f"CHECK FAILED: {problem}")
        if problems:
            return 1
        print(
            "CHECK OK: alpha leads with no lag, bravo and delta below it; charlie (wrong fork) "
            "and echo (lying head) at weight 0"
        )
    return 0
