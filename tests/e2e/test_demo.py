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
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    try:
        proc = subprocess.run(
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
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=tmp_path,
            env=env,
        )
        output = proc.stdout + proc.stderr
        logs = "\n".join(
            f"----- {p.name} -----\n{p.read_text(errors='replace')}"
            for p in sorted(workdir.glob("*.log"))
        )
        assert proc.returncode == 0, f"{output}\n{logs}"
        assert "CHECK OK" in proc.stdout, f"{output}\n{logs}"
        assert "CHECK FAILED" not in proc.stdout
        # The collector's signing key is kept with the demo's other keys, not in the cwd.
        assert (workdir / "collector.key").exists() and not (tmp_path / "collector.key").exists()

        # The ports it printed are closed again, and no child outlived it.
        sim = re.search(r"simulated operators: http://127\.0\.0\.1:(\d+)/", proc.stdout)
        api = re.search(r"API docs: http://127\.0\.0\.1:(\d+)/docs", proc.stdout)
        assert sim and api, proc.stdout
        for match in (sim, api):
            assert refuses(int(match.group(1))), f"port {match.group(1)} still accepts"
        assert survivors(str(workdir)) == []
        # The table was printed with all five operators.
        for operator in ("alpha", "bravo", "charlie", "delta", "echo"):
            assert re.search(rf"^{operator}\s", proc.stdout, re.MULTILINE), operator
        # It issued an attestation and printed how to verify it; the command works as printed.
        command = re.search(
            r"verify it offline: monitor verify (\S+) --signer (0x[0-9a-fA-F]{40})", proc.stdout
        )
        assert command and "VERIFIED" in proc.stdout, proc.stdout
        verified = subprocess.run(
            [
                sys.executable,
                "-m",
                "monitor.cli",
                "verify",
                command.group(1),
                "--signer",
                command.group(2),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.rstrip().endswith("VERIFIED"), verified.stdout
    finally:
        kill_all(str(workdir))
