"""The probe's collectors from settings and flags: `--collector` repeated, MONITOR_COLLECTOR_URLS
as a JSON list, the flag replacing the variable, and clear errors (exit 2) for bad lists or an
outbox this probe cannot read."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import ValidationError

from monitor import cli
from monitor.probe.outbox import SCHEMA_VERSION
from monitor.settings import Settings


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings `monitor probe` would run with (the agent itself is not started)."""
    calls: list[Settings] = []

    async def fake_run_probe(settings: Settings) -> None:
        calls.append(settings)

    monkeypatch.setattr("monitor.probe.agent.run_probe", fake_run_probe)
    for name in ("MONITOR_COLLECTOR_URLS", "MONITOR_COLLECTOR_URL"):
        monkeypatch.delenv(name, raising=False)
    return calls


def probe_exit(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `monitor probe ARGS`, expecting exit 2; its stderr."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_default_is_one_local_collector(seen: list[Settings]) -> None:
    cli.main(["probe"])
    assert seen[-1].collector_urls == ["http://127.0.0.1:8000"]


def test_repeated_flag_lists_them_in_order(seen: list[Settings]) -> None:
    cli.main(
        [
            "probe",
            "--collector",
            "https://b.example/",  # the trailing slash is dropped
            "--collector",
            "http://127.0.0.1:8001",
            "--collector",
            "https://a.example/monitor",
        ]
    )
    assert seen[-1].collector_urls == [
        "https://b.example",
        "http://127.0.0.1:8001",
        "https://a.example/monitor",
    ]


def test_env_list_and_the_flag_replacing_it(
    seen: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITOR_COLLECTOR_URLS", '["https://a.example", "https://b.example"]')
    cli.main(["probe"])
    cli.main(["probe", "--collector", "https://c.example"])
    assert [s.collector_urls for s in seen] == [
        ["https://a.example", "https://b.example"],
        ["https://c.example"],  # the flag replaces the list, it does not add to it
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--collector", "ftp://a.example"], "'ftp://a.example' is not like http(s)://host"),
        (["--collector", "a.example:8000"], "'a.example:8000' is not like http(s)://host"),
        (["--collector", "http://a.example:99999"], "is not like http(s)://host"),
        (["--collector", "https://a.example/?x=1"], "has a query or fragment"),
        (["--collector", "https://u:pw@a.example"], "may not carry credentials"),
        (
            ["--collector", "https://a.example", "--collector", "https://a.example/"],
            "collector https://a.example is listed more than once",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(
    seen: list[Settings], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    err = probe_exit(args, capsys)
    assert "MONITOR_COLLECTOR_URLS" in err and message in err, err
    assert seen == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "at least one collector URL is needed"),
        ('["https://a.example", "https://a.example///"]', "listed more than once"),
        ("https://a.example", "MONITOR_COLLECTOR_URLS is not a JSON list of URLs"),
        ('"https://a.example"', "MONITOR_COLLECTOR_URLS is not a JSON list of URLs"),
        ("[8000]", "MONITOR_COLLECTOR_URLS is not a JSON list of URLs"),
    ],
)
def test_bad_env_lists_exit_2(
    seen: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv("MONITOR_COLLECTOR_URLS", value)
    err = probe_exit([], capsys)
    assert message in err, err
    assert seen == []


def test_the_old_single_collector_variable_is_refused(
    seen: list[Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Set alone it would be ignored, and the probe deliver to the default collector."""
    monkeypatch.setenv("MONITOR_COLLECTOR_URL", "https://a.example")
    err = probe_exit([], capsys)
    assert "MONITOR_COLLECTOR_URL is no longer read" in err
    assert "MONITOR_COLLECTOR_URLS" in err
    # With the new variable or the flag it names nothing that is used: no error.
    cli.main(["probe", "--collector", "https://b.example"])
    monkeypatch.setenv("MONITOR_COLLECTOR_URLS", '["https://c.example"]')
    cli.main(["probe"])
    assert [s.collector_urls for s in seen] == [["https://b.example"], ["https://c.example"]]


def test_settings_validate_the_list_directly() -> None:
    assert Settings(collector_urls=[" https://a.example/ "]).collector_urls == ["https://a.example"]
    with pytest.raises(ValidationError, match="at least one"):
        Settings(collector_urls=[])
    with pytest.raises(ValidationError, match="listed more than once"):
        Settings(collector_urls=["http://127.0.0.1:8000", "http://127.0.0.1:8000/"])


def test_an_outbox_from_a_newer_probe_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any round or delivery, rather than misread."""
    for name in ("MONITOR_COLLECTOR_URLS", "MONITOR_COLLECTOR_URL"):
        monkeypatch.delenv(name, raising=False)
    key = tmp_path / "probe.key"
    key.write_text(Account.create().key.hex() + "\n")
    key.chmod(0o600)
    outbox = tmp_path / "probe.key.outbox.sqlite"
    with closing(sqlite3.connect(outbox)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    err = probe_exit(["--key", str(key), "--collector", "http://127.0.0.1:1"], capsys)
    assert f"outbox {outbox}" in err and "newer than this probe's" in err
