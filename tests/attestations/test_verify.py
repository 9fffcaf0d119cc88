"""``monitor verify`` on a real bundle and on tampered copies of it: an altered figure, a byte of
a batch, a dropped batch, a forged batch, a swapped root, a re-signed attestation, an edited
policy or recommendation; each is NOT VERIFIED (exit 1) with a FAIL line naming the problem.
Unreadable input exits 2. The bundle comes from a real collector over loopback (SQLite), once."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from monitor.app import create_app
from monitor.attestations.schemas import BundleOut
from monitor.attestations.verify import problems, verify_bundle
from monitor.cli import main
from monitor.db.session import make_engine
from monitor.serving import ServerThread
from monitor.signing.collector import sign_typed
from tests.attestations.support import TOKEN, check, make_fleet, ms, scenario, sign
from tests.attestations.test_api import issue, post_batch
from tests.conftest import make_settings
from tests.test_cli import monitor

Bundle = dict[str, Any]


@dataclass
class Issued:
    bundle: Bundle
    signer: str
    url: str  # of the attestation, while the collector runs (stopped after the module)
    forger: Callable[[], str]  # a batch of alpha in the period, signed by an unregistered key


@pytest.fixture(scope="module")
def issued(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    path = tmp_path_factory.mktemp("verify") / "monitor.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    app = create_app(make_settings(url, admin_token=TOKEN), engine=engine, scoring=False)
    server = ServerThread(app, name="collector")
    server.start()
    try:
        fleet = make_fleet(engine)
        now = datetime.now(UTC)
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
        bodies, late = scenario(fleet, start, created=now)
        for body in [*bodies, late]:
            post_batch(server.url, body)
        response = issue(server.url, start, start + timedelta(minutes=6))
        assert response.status_code == 201, response.text
        attestation = response.json()
        bundle = httpx.get(f"{server.url}/v1/attestations/{attestation['id']}/bundle").json()

        def forger() -> str:
            at = ms(start) + 3 * 60_000 + 20_000
            return sign(Account.create(), [check(fleet, "alpha", at)], created=now)

        yield Issued(
            bundle,
            app.state.service_account.address,
            f"{server.url}/v1/attestations/{attestation['id']}",
            forger,
        )
    finally:
        server.stop()
        engine.dispose()


def run_verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bundle: Bundle, *args: str
) -> tuple[int, list[str]]:
    """``monitor verify`` in this process (fast); the subprocess runs are in test_api."""
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(path), *args])
    return int(exit_info.value.code or 0), capsys.readouterr().out.strip().splitlines()


def message(bundle: Bundle) -> dict[str, Any]:
    result: dict[str, Any] = bundle["attestation"]["typed_data"]["message"]
    return result


def test_the_untouched_bundle_is_verified(
    issued: Issued, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines = run_verify(capsys, tmp_path, issued.bundle, "--signer", issued.signer.lower())
    assert code == 0, lines
    assert lines[0].startswith("attestation ") and "operator alpha on chain 1" in lines[0]
    assert lines[-1] == "VERIFIED"
    checks = [line.split(":")[0] for line in lines[1:-1]]
    assert checks == [
        "ok typed data",
        "ok signature",
        "ok signer",
        f"ok evidence root {message(issued.bundle)['evidenceRoot']} over the 4 batches",
        "ok probe signatures",
        "ok figures recomputed from the evidence",
        f"ok policy hash {message(issued.bundle)['policyHash']}",
        "ok recommendation recomputed",
    ]
    checked = verify_bundle(BundleOut.model_validate(issued.bundle), signer=issued.signer)
    assert problems(checked) == []


def _figure(b: Bundle) -> None:
    message(b)["figures"]["up"] += 1


def _byte_of_a_batch(b: Bundle) -> None:
    (i, body) = next((i, x) for i, x in enumerate(b["batches"]) if '"latency_us":20000' in x)
    b["batches"][i] = body.replace('"latency_us":20000', '"latency_us":20001', 1)


def _whitespace_in_a_batch(b: Bundle) -> None:
    b["batches"][0] += " "  # the same JSON, other bytes: another hash


def _drop_a_batch(b: Bundle) -> None:
    del b["batches"][-1]


def _swap_the_root(b: Bundle) -> None:
    message(b)["evidenceRoot"] = "0x" + "11" * 32


def _policy(b: Bundle) -> None:
    b["attestation"]["policy"]["violations"]["availability"]["first"] = 0


def _recommendation(b: Bundle) -> None:
    message(b)["recommendation"]["penaltyBps"] = 0


def _batch_count(b: Bundle) -> None:
    message(b)["batchCount"] = 5


TAMPERING: dict[str, tuple[Callable[[Bundle], None], list[str]]] = {
    "figure": (
        _figure,
        [
            "FAIL signature: the typed data recovers to",
            "FAIL figures differ from the evidence: up 3 (recomputed 2)",
        ],
    ),
    "byte of a batch": (
        _byte_of_a_batch,
        ["FAIL batch 0x", "does not match the results", "FAIL evidence root"],
    ),
    "whitespace in a batch": (_whitespace_in_a_batch, ["FAIL evidence root"]),
    "dropped batch": (
        _drop_a_batch,
        [
            "FAIL evidence root",
            "FAIL batch count: the attestation says 4 batches, the bundle has 3",
        ],
    ),
    "swapped root": (_swap_the_root, ["FAIL signature", "FAIL evidence root"]),
    "policy": (_policy, ["FAIL policy: it hashes to"]),
    "recommendation": (_recommendation, ["FAIL signature", "FAIL recommendation"]),
    "batch count": (_batch_count, ["FAIL signature", "FAIL batch count"]),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_detected(
    case: str, issued: Issued, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tamper, expected = TAMPERING[case]
    bundle = copy.deepcopy(issued.bundle)
    tamper(bundle)
    code, lines = run_verify(capsys, tmp_path, bundle)
    assert code == 1, lines
    failed = [line for line in lines if line.startswith("FAIL")]
    plural = "problem" if len(failed) == 1 else "problems"
    assert lines[-1] == f"NOT VERIFIED ({len(failed)} {plural})"
    for text in expected:
        assert any(text in line for line in failed), (text, lines)


def test_a_forged_batch_from_an_unregistered_key(
    issued: Issued, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bundle = copy.deepcopy(issued.bundle)
    bundle["batches"].append(issued.forger())
    code, lines = run_verify(capsys, tmp_path, bundle)
    assert code == 1
    assert any("not one of the attested probes" in line for line in lines), lines
    assert any(line.startswith("FAIL evidence root") for line in lines), lines
    assert any(line.startswith("FAIL batch count") for line in lines), lines


def test_a_resigned_attestation_passes_only_without_a_pinned_signer(
    issued: Issued, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A forger who alters a figure and signs with their own key makes a self-consistent
    signature; the figures still fail, and a pinned --signer fails too."""
    bundle = copy.deepcopy(issued.bundle)
    _figure(bundle)
    forger = Account.create()
    bundle["attestation"]["signature"] = sign_typed(forger, bundle["attestation"]["typed_data"])
    bundle["attestation"]["signer"] = forger.address
    code, lines = run_verify(capsys, tmp_path, bundle)
    assert code == 1
    assert any(line.startswith("ok signature: signed by " + forger.address) for line in lines)
    assert any(line.startswith("FAIL figures differ") for line in lines), lines
    code, lines = run_verify(capsys, tmp_path, bundle, "--signer", issued.signer)
    assert code == 1
    assert any(line.startswith(f"FAIL signer: {forger.address} is not") for line in lines)


def test_a_tampered_bundle_fails_in_a_subprocess_too(issued: Issued, tmp_path: Path) -> None:
    bundle = copy.deepcopy(issued.bundle)
    _byte_of_a_batch(bundle)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(bundle))
    proc = monitor("verify", str(path), "--signer", issued.signer)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("NOT VERIFIED (")


def test_unreadable_input_exits_2(
    issued: Issued, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text(json.dumps({"format": "monitor-attestation-bundle/1"}))
    for args in [
        (str(tmp_path / "missing.json"),),
        (str(not_json),),
        (str(wrong_shape),),
        (issued.url, "--signer", "0x1234"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["verify", *args])
        captured = capsys.readouterr()
        assert exit_info.value.code == 2, (args, captured)
        assert captured.err.startswith("monitor: "), captured
        assert "VERIFIED" not in captured.out
    proc = monitor("verify", issued.url.rsplit("/", 1)[0] + "/987654")  # an unknown attestation
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "HTTP 404" in proc.stderr
