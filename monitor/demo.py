"""``make demo``: the whole pipeline on loopback, each part a process started through the CLI.

simnet (five operators: healthy, lagging, wrong fork, slow, lying head) <- three probes ->
collector (SQLite) -> scores and weights, printed as a live table until Ctrl-C (or
``--duration``); at the end, alpha's attestation of the last whole minute, issued, saved and
verified as an auditor would.

``--collectors 2``: two independently keyed collectors, each with its own database, syncing
from each other; the last probe reaches only the first (the second gets its batches by sync).
At the end the weights are taken from both as a router does (monitor.client), and the second
collector countersigns the attestation after recomputing it (docs/decentralization.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from monitor import simnet
from monitor.attestations.remote import cosign_remote
from monitor.attestations.schemas import BundleOut
from monitor.attestations.verify import problems as failed_checks
from monitor.attestations.verify import verify_bundle
from monitor.client import fetch_weights, weights_output
from monitor.db.migrate import upgrade
from monitor.db.session import make_engine, session_scope
from monitor.exceptions import ConfigError, MonitorError
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.signing.keys import generate_key

REGIONS = ["eu-west", "us-east", "ap-south"]
STARTUP_TIMEOUT_S = 30.0
ATTESTED = "alpha"  # the operator the demo attests at the end
# The attestation needs a whole minute that the probes covered: --check runs on (at most this
# much longer) until one has passed, and its batches have arrived.
MINUTE_WAIT_S = 75.0
ARRIVED = timedelta(seconds=6)  # after a minute ends, its batches are everywhere


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


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def attest_and_verify(
    api: str, token: str, workdir: Path, cosigners: list[str] | None = None
) -> list[str]:
    """Issue the attestation of ATTESTED for the last whole minute (``POST /v1/attestations``),
    have each of ``cosigners`` (other collectors' URLs) countersign it, save its bundle and
    verify it as an auditor would; returns what went wrong."""
    now = datetime.now(UTC)
    end = _minute(now)
    # The minute's last batches reach the collectors within a round, and a second collector by
    # sync (settle + sync interval) a few seconds later: it recomputes the same evidence only then.
    time.sleep(max(0.0, (end + ARRIVED - now).total_seconds()))
    start = end - timedelta(minutes=1)
    issued = httpx.post(
        f"{api}/v1/attestations",
        json={
            "operator_id": ATTESTED,
            "chain_id": simnet.DEMO_CHAIN_ID,
            "start": start.isoformat(),
            "end": end.isoformat(),
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if issued.status_code != 201:
        return [f"the attestation was not issued: HTTP {issued.status_code} {issued.text[:300]}"]
    attestation_id = issued.json()["id"]
    signer = httpx.get(f"{api}/v1/identity", timeout=10).json()["address"]
    registered = [signer]
    for other in cosigners or []:
        cosign_remote(f"{api}/v1/attestations/{attestation_id}", other, admin_token=token)
        registered.append(httpx.get(f"{other}/v1/identity", timeout=10).json()["address"])
    bundle = httpx.get(f"{api}/v1/attestations/{attestation_id}/bundle", timeout=30)
    saved = workdir / f"attestation-{attestation_id}.json"
    saved.write_bytes(bundle.content)
    threshold = len(registered) if cosigners else None
    checks = verify_bundle(
        BundleOut.model_validate_json(bundle.content),
        signer=signer,
        collectors=registered if cosigners else None,
        threshold=threshold,
    )
    failed = failed_checks(checks)
    how = f" --signer {signer}"
    if cosigners:
        how += "".join(f" --collector {a}" for a in registered) + f" --threshold {threshold}"
    print(
        f"\nattestation {attestation_id}: {ATTESTED} on chain {simnet.DEMO_CHAIN_ID}, "
        f"{start:%H:%M}-{end:%H:%M} UTC, signed by the collector {signer}\n"
        f"  {api}/v1/attestations/{attestation_id}  (evidence, bundle: same URL + /evidence, "
        "/bundle)\n"
        f"  saved: {saved}\n"
        f"  verify it offline: monitor verify {saved}{how}\n"
        f"  {'VERIFIED' if not failed else 'NOT VERIFIED'} ({len(checks)} checks)",
        flush=True,
    )
    return [f"attestation check failed: {c}" for c in failed]


def _covered(first_data: datetime | None) -> bool:
    """A whole minute with the probes' data has passed, and its last batches have arrived."""
    if first_data is None:
        return False
    return datetime.now(UTC) >= _minute(first_data) + timedelta(minutes=1, seconds=5)


def _done(
    started: float, duration_s: float | None, check: bool, first_data: datetime | None
) -> bool:
    if duration_s is None:
        return False
    elapsed = time.monotonic() - started
    if not check or elapsed >= duration_s + MINUTE_WAIT_S:
        return elapsed >= duration_s
    return elapsed >= duration_s and _covered(first_data)


def _attest_if_covered(
    apis: list[str], token: str, workdir: Path, first_data: datetime | None
) -> list[str]:
    if not _covered(first_data):
        print("(no attestation: the demo stopped before a whole minute of data)")
        return ["no whole minute of data to attest"]
    try:
        return attest_and_verify(apis[0], token, workdir, apis[1:])
    except (httpx.HTTPError, MonitorError) as exc:
        return [f"attestation: {type(exc).__name__}: {exc}"]


def combine_weights(apis: list[str], signers: list[str]) -> list[str]:
    """The weights as a router takes them from every collector (monitor.client): printed, and
    what went wrong."""
    try:
        result = asyncio.run(
            fetch_weights(apis, chain_id=simnet.DEMO_CHAIN_ID, signers=signers, quorum=len(apis))
        )
    except MonitorError as exc:
        return [f"the collectors' weights did not combine: {exc.message}"]
    command = " ".join(f"--collector {a}" for a in apis)
    print(
        f"\nweights as a router takes them from {len(apis)} collectors "
        f"(monitor weights {command} --chain-id {simnet.DEMO_CHAIN_ID}):\n"
        f"{weights_output(result, as_json=False)}",
        flush=True,
    )
    return []


def run_demo(
    *, workdir: Path, duration_s: float | None = None, check: bool = False, collectors: int = 1
) -> int:
    if not 1 <= collectors <= 5:
        raise ConfigError(f"--collectors {collectors}: the demo runs 1 to 5")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    names = ["collector"] if collectors == 1 else [f"collector-{i + 1}" for i in range(collectors)]
    databases = [f"sqlite:///{workdir.resolve() / (n + '.db')}" for n in names]
    if collectors == 1:
        databases = [f"sqlite:///{workdir.resolve() / 'monitor.db'}"]
    collector_keys = [workdir.resolve() / f"{n}.key" for n in names]
    signers = [generate_key(k) for k in collector_keys]
    sim_port = free_port()
    api_ports = [free_port() for _ in names]
    apis = [f"http://127.0.0.1:{p}" for p in api_ports]
    api = apis[0]
    token = secrets.token_hex(16)  # admin token for POST /v1/attestations, this run only

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
        collectors=[{"address": a, "name": n} for a, n in zip(signers, names, strict=True)],
    )
    for database_url in databases:
        upgrade(database_url)
        engine = make_engine(database_url)
        with session_scope(engine) as session:
            apply_registry(session, registry=load_registry(registry_file))
        engine.dispose()

    env = {
        **os.environ,
        "MONITOR_SCORING_INTERVAL_S": "2",
        "MONITOR_SCORING_SETTLE_S": "2",  # one probe round
        "MONITOR_ROLLUP_INTERVAL_S": "2",
        "MONITOR_INTERVAL_S": "2",
        "MONITOR_ADMIN_TOKEN": token,
        "MONITOR_SYNC_INTERVAL_S": "2",
        "MONITOR_BATCHES_SETTLE_S": "1",
    }
    procs = Processes(workdir, env)
    final: dict[str, Any] | None = None
    first_data: datetime | None = None
    attestation_problems: list[str] = ["no attestation was issued"]
    try:
        procs.start("simnet", "simnet", "--port", str(sim_port))
        for i, name in enumerate(names):
            procs.env = {
                **env,
                "MONITOR_DATABASE_URL": databases[i],
                # The collector's key lives with the demo's other keys, not in the checkout.
                "MONITOR_SERVICE_KEY_FILE": str(collector_keys[i]),
                "MONITOR_PEERS": json.dumps([a for j, a in enumerate(apis) if j != i]),
            }
            procs.start(name, "serve", "--port", str(api_ports[i]))
        procs.env = env
        wait_until_up(f"http://127.0.0.1:{sim_port}/_control", procs)
        for each in apis:
            wait_until_up(f"{each}/healthz", procs)
        everywhere = [arg for each in apis for arg in ("--collector", each)]
        for i, key in enumerate(keys):
            # with several collectors, the last probe reaches the first only: sync does the rest
            reach = everywhere if i < len(keys) - 1 else ["--collector", api]
            procs.start(f"probe-{i + 1}", "probe", *reach, "--key", str(key))
        print(f"simulated operators: http://127.0.0.1:{sim_port}/<id>   logs and keys: {workdir}/")
        print(f"API docs: {api}/docs   weights: {api}/v1/weights?chain_id={simnet.DEMO_CHAIN_ID}")
        print(f"SLA this month: {api}/v1/sla/alpha   uptime: {api}/v1/uptime/bravo")
        print(f"badge: {api}/v1/badges/alpha/uptime/24h.svg   breach events: {api}/v1/events")
        print(f"status page: {api}/")
        for i, other in enumerate(apis[1:], start=2):
            print(f"collector {i}: {other}/v1/weights?chain_id={simnet.DEMO_CHAIN_ID} (syncs)")
        print("Ctrl-C stops everything.\n", flush=True)
        started = time.monotonic()
        while not _done(started, duration_s, check, first_data):
            procs.check_alive()
            response = httpx.get(
                f"{api}/v1/scores", params={"chain_id": simnet.DEMO_CHAIN_ID}, timeout=5
            )
            if response.status_code == 200:
                final = response.json()
                first_data = first_data or datetime.now(UTC)
                clear = "\x1b[H\x1b[J" if sys.stdout.isatty() else ""
                print(f"{clear}{render_table(final)}\n", flush=True)
            time.sleep(2)
        attestation_problems = combine_weights(apis, signers) if len(apis) > 1 else []
        attestation_problems += _attest_if_covered(apis, token, workdir, first_data)
    except KeyboardInterrupt:
        print("\nstopping...")
        attestation_problems = _attest_if_covered(apis, token, workdir, first_data)
    finally:
        procs.stop_all()
    if check:
        problems = ["no scores were served"] if final is None else expected_ranking(final)
        problems += attestation_problems
        for problem in problems:
            print(f"CHECK FAILED: {problem}")
        if problems:
            return 1
        together = (
            f"; the {collectors} collectors' signed weights combine, and every one of them "
            "signed the attestation"
            if collectors > 1
            else ""
        )
        print(
            "CHECK OK: alpha leads with no lag, bravo and delta below it; charlie (wrong fork) "
            f"and echo (lying head) at weight 0; alpha's attestation verifies{together}"
        )
    return 0
