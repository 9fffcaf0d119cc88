"""The deployment as separate OS processes, each started through the real CLI: simnet, collector
(``monitor serve``) and three probes. The collector is stopped for a while and started again on
the same port; the probes keep working from their outboxes and nothing is lost or duplicated."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from monitor import demo, simnet
from monitor.db.models import Batch, Probe
from monitor.db.session import make_engine, session_scope
from monitor.demo import free_port
from tests.support.outbox import outbox_counts

pytestmark = pytest.mark.e2e

PROBES = 3
INTERVAL_S = 1.0
WARMUP_S = 5.0
# The collector is down this long, plus the ~1.5 s a restarted `monitor serve` takes to listen:
# about 6 s unreachable in all, and the probes' third retry (after ~1 + 2 + 4 s of backoff)
# usually finds it back, which keeps the test short.
OUTAGE_S = 4.5
STARTUP_TIMEOUT_S = 30.0
WEIGHTS_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class Processes(demo.Processes):
    """The demo's process group, plus one-shot commands, single stops and logs for the test.
    Children run from ``logdir`` and append to a log file each there."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        super().__init__(logdir, env)
        self.logdir = logdir
        self.stopped: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """``prefix`` runs the command through another, e.g. ``ip netns exec NS``."""
        with (self.logdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "monitor.cli", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.logdir,
                start_new_session=True,
            )
        self.children.append((name, proc))
        return proc

    def run(self, *commands: tuple[str, ...]) -> list[str]:
        """One-shot commands, run side by side; their stdouts, or a failure with the output."""
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                cwd=self.logdir,
            )
            for args in commands
        ]
        outputs = []
        try:
            for args, proc in zip(commands, running, strict=True):
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, f"monitor {' '.join(args)}: {out}\n{err}"
                outputs.append(out)
        finally:
            for proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
        return outputs

    def check_alive(self) -> None:
        """Fail fast when a child died on its own (not stopped by the test)."""
        for name, proc in self.children:
            if proc.poll() is not None and proc not in self.stopped:
                raise AssertionError(f"{name} exited with {proc.returncode}")

    def terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, once: a second one during a graceful shutdown may kill the process."""
        if proc in self.stopped:
            return
        self.stopped.append(proc)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL when it does not exit in time; the exit code after SIGTERM, or
        None when it had to be killed."""
        self.terminate(proc)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            return None

    def logs(self) -> str:
        return "\n".join(
            f"----- {path.name} -----\n{path.read_text(errors='replace')}"
            for path in sorted(self.logdir.glob("*.log"))
        )


def wait_for(
    what: str, condition: Callable[[], Any], procs: Processes, timeout: float, step: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def responds(url: str) -> bool:
    try:
        # trust_env=False: no proxy from the environment between a test and its own servers
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_collector_restart_loses_and_duplicates_nothing(
    database_url: str, procs: Processes, tmp_path: Path
) -> None:
    sim_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    db_flag = ("--database-url", database_url)

    procs.start("simnet", "simnet", "--port", str(sim_port))
    keys = [tmp_path / f"probe-{i}.key" for i in range(PROBES)]
    addresses = [out.strip() for out in procs.run(*(("keygen", "--out", str(k)) for k in keys))]
    registry = tmp_path / "registry.yaml"
    simnet.write_registry(
        registry,
        simnet.DEMO_OPERATORS,
        simnet.demo_chains(),
        url_base=f"http://127.0.0.1:{sim_port}",
        probes=[
            {"address": a, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, a in enumerate(addresses)
        ],
    )
    procs.run(("db", "upgrade", *db_flag))
    [applied] = procs.run(("registry", "apply", str(registry), *db_flag))
    assert f"probes: {PROBES} created" in applied

    procs.env["MONITOR_SCORING_INTERVAL_S"] = "1"
    procs.env["MONITOR_SCORING_SETTLE_S"] = str(INTERVAL_S)  # one round behind the clock
    serve_args = ("serve", "--port", str(api_port), *db_flag)
    collector = procs.start("collector-1", *serve_args)
    wait_for(
        "the simnet",
        lambda: responds(f"http://127.0.0.1:{sim_port}/_control"),
        procs,
        STARTUP_TIMEOUT_S,
    )
    wait_for("the collector", lambda: responds(f"{api}/healthz"), procs, STARTUP_TIMEOUT_S)
    probes = [
        procs.start(
            f"probe-{i}",
            "probe",
            "--collector",
            api,
            "--key",
            str(k),
            "--interval",
            str(INTERVAL_S),
        )
        for i, k in enumerate(keys)
    ]
    outboxes = [k.with_name(k.name + ".outbox.sqlite") for k in keys]

    # 1. Running: the collector ranks the healthy operator first, the forked one at zero.
    time.sleep(WARMUP_S)

    def ranked() -> dict[str, float] | None:
        response = httpx.get(
            f"{api}/v1/weights", params={"chain_id": simnet.DEMO_CHAIN_ID}, timeout=5
        )
        if response.status_code != 200:
            return None
        weights = {w["operator_id"]: w["weight"] for w in response.json()["weights"]}
        if set(weights) != {"alpha", "bravo", "charlie", "delta", "echo"}:
            return None
        top = max(weights, key=lambda o: weights[o])
        return weights if top == "alpha" and weights["alpha"] > 0 == weights["charlie"] else None

    weights = wait_for(
        "alpha first, charlie at 0 in /v1/weights", ranked, procs, WEIGHTS_TIMEOUT_S, step=0.5
    )
    assert all(weights["alpha"] > weights[o] for o in ("bravo", "charlie", "delta")), weights

    # 2. The collector goes away; the probes keep running rounds into their outboxes.
    # uvicorn re-raises the SIGTERM it handled once shut down gracefully: -15 is a clean stop.
    assert procs.stop(collector) in (0, -signal.SIGTERM), "the collector did not stop on SIGTERM"
    outage_start = datetime.now(UTC)
    time.sleep(OUTAGE_S)
    procs.check_alive()
    assert not responds(f"{api}/healthz")
    # A round against the demo network takes a little over a second (the slow operator answers
    # each of four checks in 0.3 s), so with a 1 s interval every other tick is skipped.
    assert all(outbox_counts(o)[0] >= int(OUTAGE_S / (2 * INTERVAL_S)) for o in outboxes), [
        outbox_counts(o) for o in outboxes
    ]
    outage_end = datetime.now(UTC)

    # 3. Back on the same port: the outboxes drain.
    procs.start("collector-2", *serve_args)
    wait_for(
        "the restarted collector", lambda: responds(f"{api}/healthz"), procs, STARTUP_TIMEOUT_S
    )
    wait_for(
        "every outbox to drain",
        lambda: all(outbox_counts(o)[0] == 0 for o in outboxes),
        procs,
        DRAIN_TIMEOUT_S,
        step=0.2,
    )

    # 4. Stop each probe just after it delivered a batch (between two rounds, so no batch is
    #    made and left undelivered at the moment it stops). They must exit 0 promptly.
    engine = make_engine(database_url)
    try:

        def delivered(address: str) -> int:
            with session_scope(engine) as session:
                return (
                    session.scalar(
                        select(func.count())
                        .select_from(Batch)
                        .join(Probe, Probe.id == Batch.probe_id)
                        .where(Probe.address == address)
                    )
                    or 0
                )

        before = {address: delivered(address) for address in addresses}
        running = dict(zip(addresses, zip(probes, outboxes, strict=True), strict=True))
        deadline = time.monotonic() + 10 * INTERVAL_S
        while running:
            for address, (proc, outbox) in list(running.items()):
                if delivered(address) > before[address] and outbox_counts(outbox)[0] == 0:
                    procs.terminate(proc)
                    del running[address]
            if time.monotonic() > deadline:
                raise AssertionError(f"no fresh delivery from {sorted(running)} within 10 s")
            procs.check_alive()
            time.sleep(0.05)
        for proc, address in zip(probes, addresses, strict=True):
            assert procs.stop(proc) == 0, f"probe {address} did not exit 0 within 10 s"

        # 5. Every round of every probe is in the database exactly once; some arrived late.
        with session_scope(engine) as session:
            rows = session.execute(
                select(Probe.address, Batch.batch_id, Batch.created_at, Batch.received_at).join(
                    Probe, Probe.id == Batch.probe_id
                )
            ).all()
    finally:
        engine.dispose()

    keys_seen = [(r.address, r.batch_id) for r in rows]
    assert len(keys_seen) == len(set(keys_seen)), "a (probe, batch_id) is stored twice"
    for address, outbox in zip(addresses, outboxes, strict=True):
        pending, rejected = outbox_counts(outbox)
        mine = sorted((r for r in rows if r.address == address), key=lambda r: r.created_at)
        rounds = len(mine) + pending + rejected
        assert (pending, rejected) == (0, 0), address
        assert len(mine) == rounds
        # No gap in the sequence of rounds: none lost while the collector was down.
        gaps = [(b.created_at - a.created_at).total_seconds() for a, b in itertools.pairwise(mine)]
        assert max(gaps) < 2.5 * INTERVAL_S, (address, gaps)
        late = [r for r in mine if outage_start <= r.created_at <= outage_end]
        assert len(late) >= int(OUTAGE_S / (2 * INTERVAL_S)), (address, len(late))
        # Made during the outage, so necessarily delivered after it, from the outbox.
        assert all(r.received_at >= outage_end - timedelta(seconds=0.5) for r in late), address
