"""docs/signing.md cannot rot: its verification script and example body are executed here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from monitor.ingest.schemas import ProbeResult, SignedBatch
from monitor.signing.canonical import canonical_results, results_hash
from monitor.signing.eip712 import DEFAULT_MAX_SKEW_MS, sign_batch, verify_batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"
EXAMPLE_KEY = "0x" + "4c" * 32


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def _script() -> str:
    (script,) = [b for b in _blocks("python") if b.startswith("# verify_batch.py")]
    return script


def _example_body() -> dict[str, Any]:
    (body,) = [json.loads(b) for b in _blocks("json") if '"signature"' in b]
    return body


def _run(tmp_path: Path, batch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_batch.py"
    script.write_text(_script())
    data = tmp_path / "batch.json"
    data.write_text(json.dumps(batch))
    return subprocess.run(
        [sys.executable, str(script), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _fresh_batch() -> tuple[str, SignedBatch]:
    account = Account.create()
    result = {
        "endpoint_id": 3,
        "operator_id": "op-1",
        "chain_id": 10,
        "observed_at_ms": 1_700_000_000_000,
        "ok": True,
        "error": "wrong_hash",
        "latency_us": 1500,
        "head": 5,
        "reference_head": 5,
        "lag_blocks": 0,
        "lag_ms": 0,
        "check_height": 3,
        "block_hash": "0x" + "0f" * 32,
        "correct": False,
    }
    return account.address, sign_batch(account, [ProbeResult.model_validate(result)])


def test_script_prints_signer_of_fresh_batch(tmp_path: Path) -> None:
    address, batch = _fresh_batch()
    proc = _run(tmp_path, json.loads(batch.model_dump_json()))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == address


def test_script_rejects_tampered_results(tmp_path: Path) -> None:
    _, batch = _fresh_batch()
    body = json.loads(batch.model_dump_json())
    body["results"][0]["head"] = 6
    proc = _run(tmp_path, body)
    assert proc.returncode != 0
    assert "resultsHash" in proc.stderr


def test_script_rejects_wrong_probe(tmp_path: Path) -> None:
    _, batch = _fresh_batch()
    body = json.loads(batch.model_dump_json())
    body["message"]["probe"] = Account.create().address
    proc = _run(tmp_path, body)
    assert proc.returncode != 0
    assert "not by the claimed probe" in proc.stderr


def test_doc_example_body_verifies(tmp_path: Path) -> None:
    body = _example_body()
    expected = Account.from_key(EXAMPLE_KEY).address
    assert body["message"]["probe"] == expected
    assert verify_batch(SignedBatch.model_validate(body)) == expected
    proc = _run(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_doc_example_is_reproducible() -> None:
    """Signatures are deterministic (RFC 6979): re-signing gives the documented body exactly."""
    body = _example_body()
    results = [ProbeResult.model_validate(r) for r in body["results"]]
    again = sign_batch(
        Account.from_key(EXAMPLE_KEY),
        results,
        batch_id=body["message"]["batchId"],
        created_at_ms=body["message"]["createdAt"],
    )
    assert json.loads(again.model_dump_json()) == body


def test_doc_canonical_example_and_constants() -> None:
    text = DOC.read_text()
    results = _example_body()["results"]
    assert canonical_results(results).decode() in text
    assert results_hash(results) in text
    assert results_hash([]) in text
    assert f"{DEFAULT_MAX_SKEW_MS // 1000} s" in text


@pytest.mark.parametrize("block", ["python", "json"])
def test_doc_has_blocks(block: str) -> None:
    assert _blocks(block)


# --- Signed weights -----------------------------------------------------------------------------


def _weights_script() -> str:
    (script,) = [b for b in _blocks("python") if b.startswith("# verify_weights.py")]
    return script


def test_documented_type_hash_is_the_real_one() -> None:
    from monitor.signing.collector import WEIGHTS_TYPE_HASH

    assert DOC.read_text().count(WEIGHTS_TYPE_HASH) == 2
