"""The probe key file: created 0600, never overwritten, loaded with clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from eth_utils import is_checksum_address

from monitor.exceptions import ConfigError
from monitor.signing.keys import generate_key, load_key


def test_generate_and_load(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "probe.key"
    address = generate_key(path)
    assert is_checksum_address(address)
    assert load_key(path).address == address
    text = path.read_text()
    assert text.startswith("0x") and text.endswith("\n") and len(text) == 2 + 64 + 1


def test_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "probe.key"
    generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_mode_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "probe.key"
        generate_key(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "probe.key"
    first = generate_key(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="exists"):
        generate_key(path)
    assert path.read_bytes() == before
    assert load_key(path).address == first


def test_refuses_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "probe.key"
    link.symlink_to(target)
    with pytest.raises(ConfigError):
        generate_key(link)
    assert not target.exists()


def test_two_keys_differ(tmp_path: Path) -> None:
    assert generate_key(tmp_path / "a.key") != generate_key(tmp_path / "b.key")


def test_load_accepts_unprefixed_and_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("  " + "4c" * 32 + "\n\n")
    assert load_key(path).key.hex().removeprefix("0x") == "4c" * 32


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_key(tmp_path / "nope.key")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_load_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "probe.key"
    generate_key(path)
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_key(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello\n",
        b"0x" + b"4c" * 31 + b"\n",  # too short
        b"0x" + b"zz" * 32 + b"\n",
        b"0x" + b"00" * 32 + b"\n",  # zero is not a private key
        b"0x" + b"ff" * 32 + b"\n",  # above the curve order
        b"\xff\xfe\x00",  # not text
    ],
)
def test_load_bad_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "probe.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_key(path)
    # The (possibly key-like) content must never be echoed.
    assert "4c4c4c" not in str(exc.value).replace(str(path), "")


def test_load_warns_on_loose_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "probe.key"
    generate_key(path)
    path.chmod(0o644)
    with caplog.at_level("WARNING"):
        load_key(path)
    assert "0600" in caplog.text
