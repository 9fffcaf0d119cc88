"""The probe's secp256k1 key file: one line, ``0x`` + 64 hex digits, mode 0600.

The file is the probe's identity: whoever holds it can sign batches in the probe's name and read
the operators' endpoint URLs (which carry API keys). Hence it is created unreadable to others
from the first byte, never overwritten, and never echoed in error messages.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from monitor.exceptions import ConfigError

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def generate_key(path: Path) -> str:
    """Create a new random key at ``path`` (mode 0600, never overwriting); return its address."""
    path = Path(path)
    try:
        # 0700 applies to the last directory only; intermediate ones get the umask default.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create directory {path.parent} for key file: {exc}") from exc
    account = Account.create()
    try:
        # O_EXCL: refuse to overwrite (and to follow a planted symlink); 0o600 at creation so the
        # key is never world-readable, not even between open() and a later chmod.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"key file {path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc}") from exc
    try:
        # The umask can only narrow 0o600, but make the mode exact regardless.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write("0x" + bytes(account.key).hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        # A half-written key file would be loaded later as "not a valid key"; remove it.
        path.unlink(missing_ok=True)
        raise
    return str(account.address)


def load_key(path: Path) -> LocalAccount:
    """Read the key at ``path``; ConfigError when missing, unreadable or not a valid key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from exc
    key = text.strip()
    # Never include the file's content in the message: it may be a (slightly damaged) key.
    if not _KEY_RE.match(key):
        raise ConfigError(f"key file {path} does not hold a key (expected 0x + 64 hex digits)")
    try:
        account: LocalAccount = Account.from_key(key)
    except (ValueError, TypeError) as exc:
        # e.g. zero or >= the curve order
        raise ConfigError(f"key file {path} does not hold a valid secp256k1 private key") from exc
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o077:
        # Not fatal (the operator may have reasons), but loud: the key is readable by others.
        log.warning("key file %s has mode %o; it should be 0600", path, mode)
    return account
