"""Where this collector is in each peer's stream of batches (monitor.ingest.sync)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from monitor.db.base import Base, UTCDateTime


class PeerCursor(Base):
    """One configured peer: the cursor of its ``GET /v1/batches`` to ask from next (opaque, the
    peer's), and how the last sync went. A peer removed from the settings keeps its row, so
    adding it back resumes where it was; deleting the row makes the next sync start over from
    the peer's first batch (what it already holds is acknowledged as duplicates)."""

    __tablename__ = "peer_cursors"

    peer_url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(128))
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # a whole sync
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)  # cleared by the next success
