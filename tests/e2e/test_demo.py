"""``monitor demo --check``: the whole pipeline as processes, the expected ranking, an
attestation that ``monitor verify`` accepts, and nothing left running afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DURATION_S = 25
TIMEOUT_S = 180  # DURATION_S, up to MINUTE_WAIT_S more for a whole minute to attest, startup


def refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def survivors(marker: str) -> list[str]:
    """``monitor.cli`` processes whose arguments or environment mention ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "monitor.cli" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if "State:\tZ" in status:
            continue
        if marker in cmdline or marker in environ:
            found.append(f"{entry.name}: {cmdline}")
    return found


def kill_all(marker: str) -> None:
    for line in survivors(marker):
        pid = int(line.split(":", 1)[0])
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_demo_check(tmp_path: Path) -> None:
    """``monitor demo --check`` as ``make demo`` runs it (one collector), and side by side with
    ``--collectors 2`` (issue 8: the collectors sync, their signed weights combine as a router
    takes them, the attestation is co-signed and verifies with a threshold of two). Side by
    side because each waits most of its time for a whole minute of data to attest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    runs: dict[int, tuple[Path, subprocess.Popen[str]]] = {}
    try:
        for collectors in (1, 2):
            cwd = tmp_path / f"run-{collectors}"
            cwd.mkdir()
            workdir = cwd / "demo"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitor.cli",
                    "demo",
                    "--workdir",
                    str(workdir),
                    "--duration",
                    str(DURATION_S),
                    "--check",
                    "--collectors",
                    str(collectors),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=cwd,
                env=env,
            )
            runs[collectors] = (workdir, proc)
        outputs = {c: proc.communicate(timeout=TIMEOUT_S) for c, (_, proc) in runs.items()}
        for collectors, (workdir, proc) in runs.items():
            stdout, stderr = outputs[collectors]
            check_run(collectors, workdir, proc.returncode, stdout, stderr, env)
    finally:
        for workdir, proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            kill_all(str(workdir))


def check_run(
    collectors: int, workdir: Path, returncode: int, stdout: str, stderr: str, env: dict[str, str]
) -> None:
    output = stdout + stderr
    logs = "\n".join(
        f"----- {p.name} -----\n{p.read_text(errors='replace')}"
        for p in sorted(workdir.glob("*.log"))
    )
    assert returncode == 0, f"{output}\n{logs}"
    assert "CHECK OK" in stdout, f"{output}\n{logs}"
    assert "CHECK FAILED" not in stdout
    # The collectors' signing keys are kept with the demo's other keys, not in the cwd.
    names = ["collector"] if collectors == 1 else ["collector-1", "collector-2"]
    assert all((workdir / f"{n}.key").exists() for n in names)
    assert not list(workdir.parent.glob("*.key"))

    # The ports it printed are closed again, and no child outlived it.
    sim = re.search(r"simulated operators: http://127\.0\.0\.1:(\d+)/", stdout)
    api = re.search(r"API docs: http://127\.0\.0\.1:(\d+)/docs", stdout)
    assert sim and api, stdout
    for match in (sim, api):
        assert refuses(int(match.group(1))), f"port {match.group(1)} still accepts"
    assert survivors(str(workdir)) == []
    # The table was printed with all five operators.
    for operator in ("alpha", "bravo", "charlie", "delta", "echo"):
        assert re.search(rf"^{operator}\s", stdout, re.MULTILINE), operator
    # It issued an attestation and printed how to verify it; the command works as printed.
    command = re.search(r"verify it offline: monitor (verify \S+ --signer .*)$", stdout, re.M)
    assert command and "VERIFIED" in stdout, stdout
    if collectors > 1:
        assert "--threshold 2" in command.group(1)
        assert f"{collectors} of {collectors} collectors counted" in stdout
    verified = subprocess.run(
        [sys.executable, "-m", "monitor.cli", *command.group(1).split()],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.rstrip().endswith("VERIFIED"), verified.stdout
