"""docs/routers.md cannot rot: both of its Python examples run here, as copied from the page
(only the collectors, their addresses and the chain replaced), against real collectors with a
forger among them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import Fleet

# The collectors' database does not matter here (test_fetch runs on both): SQLite only.
ONE_BACKEND = pytest.mark.parametrize("fleet", ["sqlite"], indirect=True)

DOC = Path(__file__).resolve().parents[2] / "docs" / "routers.md"


def example(first_line: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def configured(script: str, collectors: list[str], signers: list[str], chain_id: int) -> str:
    for name, value in (("COLLECTORS", collectors), ("SIGNERS", signers)):
        script, n = re.subn(
            rf"^{name} = \[\n.*?^\]\n", f"{name} = {json.dumps(value)}\n", script, flags=re.S | re.M
        )
        assert n == 1, name
    script, n = re.subn(r"^CHAIN_ID = 1$", f"CHAIN_ID = {chain_id}", script, flags=re.M)
    assert n == 1
    return script


def run(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "router.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def printed(fleet: Fleet) -> str:
    return "".join(
        f"{w['endpoint_id']} {w['operator_id']} {w['weight_bps']}\n"
        for w in sorted(fleet.answer["weights"], key=lambda w: w["endpoint_id"])
    )


@ONE_BACKEND
def test_the_monitor_client_example(fleet: Fleet, tmp_path: Path) -> None:
    script = example("# router_weights.py")
    a, b, _ = fleet.honest
    with_forger = configured(script, [a, fleet.tampered, b], fleet.signers, fleet.chain_id)
    proc = run(tmp_path, with_forger)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed(fleet)
    assert f"{fleet.tampered}: excluded unknown_signer" in proc.stderr

    no_quorum = configured(
        script, [a, fleet.tampered, fleet.refused], fleet.signers, fleet.chain_id
    )
    proc = run(tmp_path, no_quorum)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "keep the last good weights" in proc.stderr
    assert f"{fleet.refused}: excluded unreachable" in proc.stderr


@ONE_BACKEND
def test_the_httpx_and_eth_account_example(fleet: Fleet, tmp_path: Path) -> None:
    script = example("# verify_weights.py")
    assert "monitor" not in script.replace("monitor-collector", "")  # needs nothing of ours
    a, b, _ = fleet.honest
    pinned = [*fleet.signers[:2], fleet.rogue_signer]  # the rogue is pinned: counted, outvoted
    collectors = [a, fleet.tampered, fleet.rogue, fleet.mirror, b]
    proc = run(tmp_path, configured(script, collectors, pinned, fleet.chain_id))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == printed(fleet)
    assert f"{fleet.tampered}: excluded: signed by 0x" in proc.stderr

    down = configured(script, [a, fleet.refused, fleet.resigned], pinned, fleet.chain_id)
    proc = run(tmp_path, down)
    assert proc.returncode == 1
    assert proc.stderr.endswith("1 valid answers, 2 needed: keep the last good weights\n")
