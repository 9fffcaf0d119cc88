"""`monitor weights`: the table and the report, --json, and the exit codes (0 combined, 1 no
quorum, 2 usage), against the collectors of tests/client/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from monitor.cli import main
from tests.client.conftest import Fleet

# The collectors' database does not matter here (test_fetch runs on both): SQLite only.
ONE_BACKEND = pytest.mark.parametrize("fleet", ["sqlite"], indirect=True)


def weights(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["weights", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def collectors(*urls: str) -> list[str]:
    return [arg for url in urls for arg in ("--collector", url)]


def pins(*addresses: str) -> list[str]:
    return [arg for a in addresses for arg in ("--signer", a)]


@ONE_BACKEND
def test_a_table_of_the_combined_weights_and_who_disagreed(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = fleet.honest
    args = [*collectors(a, fleet.rogue, b, fleet.tampered), "--chain-id", str(fleet.chain_id)]
    code, out, err = weights(capsys, *args, "--quorum", "2", "--window", "5m")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0].startswith(f"chain {fleet.chain_id}, window 5m, as of ")
    assert "3 of 4 collectors counted (quorum 2), per-endpoint median" in lines[0]
    best = max(fleet.answer["weights"], key=lambda w: w["weight_bps"])
    row = next(line for line in lines if line.split()[:1] == [str(best["endpoint_id"])])
    assert row.split()[1:] == [
        best["operator_id"],
        f"{best['weight_bps'] / 10_000:.4f}",
        str(best["weight_bps"]),
    ]
    assert lines[lines.index("") - 1].split() == ["total", "10000"]
    rogue = next(line for line in lines if line.startswith(fleet.rogue))
    assert "disagreed" in rogue and fleet.rogue_signer in rogue
    assert f"endpoint {fleet.ids['charlie']} (charlie): 2000 bps, combined 0 bps" in out
    tampered = next(line for line in lines if line.startswith(fleet.tampered))
    assert "excluded" in tampered and "unknown_signer: signature recovers to" in tampered


@ONE_BACKEND
def test_json_output_and_a_quorum_failure(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = fleet.honest
    chain = ["--chain-id", str(fleet.chain_id)]
    code, out, err = weights(capsys, *collectors(a, b, c), *chain, *pins(*fleet.signers), "--json")
    assert (code, err) == (0, "")
    body = json.loads(out)
    assert (body["unanimous"], body["counted"], body["quorum"], body["total_bps"]) == (
        True,
        3,
        2,
        10_000,
    )
    assert [(w["endpoint_id"], w["weight_bps"]) for w in body["weights"]] == [
        (w["endpoint_id"], w["weight_bps"]) for w in fleet.answer["weights"]
    ]
    assert [r["status"] for r in body["collectors"]] == ["ok"] * 3

    args = [*collectors(a, fleet.resigned, fleet.refused), *chain, *pins(*fleet.signers)]
    code, out, err = weights(capsys, *args)
    assert code == 1
    assert (
        err
        == f"monitor: 1 of 3 collectors gave valid weights for chain {fleet.chain_id}, 2 needed\n"
    )
    assert "unknown_signer" in out and "unreachable" in out
    code, out, err = weights(capsys, *args, "--json")
    assert code == 1 and err.startswith("monitor: 1 of 3")
    failure = json.loads(out)
    assert failure["error"]["code"] == "quorum_not_reached"
    assert [r["reason"] for r in failure["collectors"]] == [None, "unknown_signer", "unreachable"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chain-id", "1"], "--collector"),
        (["--collector", "http://127.0.0.1:9"], "--chain-id"),
        (["--collector", "http://127.0.0.1:9", "--chain-id", "x"], "invalid int"),
        (["--collector", "http://127.0.0.1:9", "--chain-id", "1", "--quorum", "2"], "quorum 2"),
        (["--collector", "http://127.0.0.1:9", "--chain-id", "1", "--signer", "0xz"], "address"),
        (["--collector", "http://127.0.0.1:9", "--chain-id", "1", "--window", "5x"], "window"),
        (["--collector", "127.0.0.1:9", "--chain-id", "1"], "not an http"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = weights(capsys, *args)
    assert code == 2 and message in err and out == ""


@ONE_BACKEND
def test_the_installed_command_as_a_router_would_run_it(fleet: Fleet) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    args = [*collectors(*fleet.honest), "--chain-id", str(fleet.chain_id), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "weights", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["as_of_ms"] == fleet.answer["as_of_ms"]
