"""Reading a probe's outbox from outside the probe, while it may be writing it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def outbox_counts(outbox: Path) -> tuple[int, int]:
    """(pending, rejected) in a probe's outbox, read while the probe may be writing it."""
    if not outbox.exists():
        return (-1, -1)
    db = sqlite3.connect(outbox, timeout=5)
    try:
        pending = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        rejected = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
        return (int(pending), int(rejected))
    except sqlite3.OperationalError:  # tables not created yet
        return (-1, -1)
    finally:
        db.close()
