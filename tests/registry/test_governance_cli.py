"""`monitor registry sign | hash | apply` as a signer and a collector operator run them: a
subprocess each, exit codes, what they print, and the database left alone on a refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from monitor.db.session import make_engine
from monitor.registry.canonical import registry_hash
from monitor.registry.governance import load_signatures, sidecar_path
from monitor.registry.schema import load_registry, parse_registry
from monitor.signing.keys import generate_key
from tests.conftest import row_counts
from tests.registry.samples import sample

TIMEOUT_S = 60


def monitor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )


def test_sign_hash_and_apply_round_trip(tmp_path: Path) -> None:
    keys = [tmp_path / f"signer-{i}.key" for i in range(3)]
    addresses = [generate_key(k) for k in keys]
    path = tmp_path / "registry.yaml"
    path.write_text("# the network\n" + yaml.safe_dump(sample()))
    text = path.read_text()
    digest = registry_hash(load_registry(path))

    hashed = monitor("registry", "hash", str(path))
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout == digest + "\n"
    canonical = monitor("registry", "hash", str(path), "--canonical")
    assert registry_hash(parse_registry(canonical.stdout, source="-")) == digest

    signed = monitor("registry", "sign", str(path), "--key", str(keys[0]))
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.splitlines() == [
        f"{addresses[0]} signed registry {digest}",
        f"{sidecar_path(path)}: 1 signature(s)",
    ]
    assert path.read_text() == text  # the YAML is only read
    (entry,) = load_signatures(sidecar_path(path))
    assert (entry.signer, entry.registry_hash) == (addresses[0], digest)

    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    assert monitor("db", "upgrade", "--database-url", url).returncode == 0
    env = {
        "MONITOR_DATABASE_URL": url,
        "MONITOR_GOVERNANCE_SIGNERS": json.dumps(addresses),
        "MONITOR_GOVERNANCE_THRESHOLD": "2",
    }
    engine = make_engine(url)
    try:
        before = row_counts(engine)
        refused = monitor("registry", "apply", str(path), env=env)
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert "Traceback" not in refused.stderr
        assert refused.stderr.startswith(
            f"monitor: {path}: registry {digest} is not approved: 1 valid signature(s)"
        )
        assert "nothing was applied: the registry in force is unchanged" in refused.stderr
        assert row_counts(engine) == before

        assert monitor("registry", "sign", str(path), "--key", str(keys[2])).returncode == 0
        applied = monitor("registry", "apply", str(path), env=env)
        assert applied.returncode == 0, applied.stderr
        assert f"registry {digest}, approved by 2 of 3 governance signers" in applied.stdout
        # the penalty policy, the registry and its approval
        assert row_counts(engine)["documents"] == before["documents"] + 3
    finally:
        engine.dispose()


def test_bad_governance_settings_and_a_missing_key_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(sample()))
    signer = "0x52908400098527886E0F7030069857D2E4169EE7"
    bad = monitor(
        "registry",
        "apply",
        str(path),
        env={
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "MONITOR_GOVERNANCE_SIGNERS": json.dumps([signer]),
            "MONITOR_GOVERNANCE_THRESHOLD": "2",
        },
    )
    assert bad.returncode == 2
    assert "MONITOR_GOVERNANCE_THRESHOLD: must be between 1 and 1" in bad.stderr
    missing = monitor("registry", "sign", str(path), "--key", str(tmp_path / "nope.key"))
    assert missing.returncode == 2
    assert f"key file {tmp_path / 'nope.key'} does not exist" in missing.stderr
    assert not sidecar_path(path).exists()
