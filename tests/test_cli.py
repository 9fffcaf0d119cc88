"""The ``monitor`` command as a user runs it: a subprocess, exit codes, stdout and stderr."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from eth_utils import is_checksum_address

from monitor.cli import build_parser

TIMEOUT_S = 60


def monitor(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def verb_paths(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every verb and sub-verb the parser knows, e.g. ('db',), ('db', 'upgrade')."""
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += verb_paths(sub, (*prefix, name))
    return paths


VERBS = verb_paths(build_parser())


def test_verbs_are_discovered() -> None:
    assert {("keygen",), ("db",), ("db", "upgrade"), ("registry", "apply"), ("serve",)} <= set(
        VERBS
    )


def test_top_level_help() -> None:
    proc = monitor("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: monitor")
    for (name,) in (p for p in VERBS if len(p) == 1):
        assert name in proc.stdout


@pytest.mark.parametrize("path", VERBS, ids=["-".join(p) for p in VERBS])
def test_verb_help(path: tuple[str, ...]) -> None:
    proc = monitor(*path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: monitor {' '.join(path)}")
    assert proc.stderr == ""


def test_no_verb_is_a_usage_error() -> None:
    proc = monitor()
    assert proc.returncode == 2
    assert "usage: monitor" in proc.stderr


def test_keygen(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "probe.key"
    proc = monitor("keygen", "--out", str(key))
    assert proc.returncode == 0, proc.stderr
    address = proc.stdout.strip()
    assert is_checksum_address(address), address
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().strip().startswith("0x")
    assert key.read_text().strip() not in proc.stdout + proc.stderr  # the secret is not echoed

    content = key.read_bytes()
    again = monitor("keygen", "--out", str(key))
    assert again.returncode == 2
    assert again.stdout == ""
    assert f"key file {key} already exists" in again.stderr
    assert "Traceback" not in again.stderr
    assert key.read_bytes() == content  # never overwritten


def test_keygen_gives_a_new_key_each_time(tmp_path: Path) -> None:
    a = monitor("keygen", "--out", str(tmp_path / "a.key"))
    b = monitor("keygen", "--out", str(tmp_path / "b.key"))
    assert a.returncode == b.returncode == 0
    assert a.stdout != b.stdout


def test_registry_apply_bad_file_names_file_entry_and_field(tmp_path: Path) -> None:
    db = tmp_path / "monitor.db"
    assert monitor("db", "upgrade", "--database-url", f"sqlite:///{db}").returncode == 0
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "chains": [{"chain_id": 1, "name": "main", "block_time_s": 12, "confirmations": 3}],
                "operators": [
                    {"id": "alpha", "name": "A", "endpoints": [{"chain_id": 1, "url": "http://a"}]},
                    {"id": "bravo", "name": "B", "endpoints": [{"chain_id": 7, "url": "http://b"}]},
                ],
            }
        )
    )
    proc = monitor("registry", "apply", str(registry), "--database-url", f"sqlite:///{db}")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert (
        f"monitor: {registry}: operators[1] (id=bravo).endpoints[0].chain_id: "
        "chain 7 is not in chains"
    ) in proc.stderr


def test_registry_apply_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    proc = monitor(
        "registry", "apply", str(missing), "--database-url", f"sqlite:///{tmp_path}/x.db"
    )
    assert proc.returncode == 2
    assert f"{missing}: cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_registry_apply_good_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    assert monitor("db", "upgrade", "--database-url", url).returncode == 0
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {"chains": [{"chain_id": 1, "name": "main", "block_time_s": 12, "confirmations": 3}]}
        )
    )
    first = monitor("registry", "apply", str(registry), env={"MONITOR_DATABASE_URL": url})
    assert first.returncode == 0, first.stderr
    assert "chains: 1 created, 0 updated, 0 deactivated" in first.stdout
    second = monitor("registry", "apply", str(registry), env={"MONITOR_DATABASE_URL": url})
    assert second.returncode == 0, second.stderr
    assert "chains: 0 created, 0 updated, 0 deactivated" in second.stdout


def test_serve_refuses_a_database_never_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    proc = monitor("serve", "--database-url", url, "--port", "1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "run `monitor db upgrade`" in proc.stderr
    assert f"monitor: no database at {tmp_path / 'never.db'}" in proc.stderr


def test_probe_with_a_missing_key_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    proc = monitor("probe", "--key", str(missing), "--collector", "http://127.0.0.1:1")
    assert proc.returncode == 2
    assert f"key file {missing} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
