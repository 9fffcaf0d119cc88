"""peer cursors: where this collector is in each peer's GET /v1/batches

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 21:12:53.015652
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peer_cursors",
        sa.Column("peer_url", sa.String(length=2048), nullable=False),
        sa.Column("cursor", sa.String(length=128), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("peer_url", name=op.f("pk_peer_cursors")),
    )


def downgrade() -> None:
    op.drop_table("peer_cursors")
