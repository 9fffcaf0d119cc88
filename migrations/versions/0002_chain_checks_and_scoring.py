"""checks quorum and scoring per chain, archive endpoints

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quorum", sa.Integer(), server_default="2", nullable=False))
        batch_op.add_column(sa.Column("checks", sa.Text(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("scoring", sa.Text(), server_default="{}", nullable=False))

    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("archive", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.drop_column("archive")

    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.drop_column("scoring")
        batch_op.drop_column("checks")
        batch_op.drop_column("quorum")
