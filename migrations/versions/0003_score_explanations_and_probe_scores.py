"""score explanations, status since, probe outlier scores

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "probe_scores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("probe_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("endpoints", sa.Integer(), nullable=False),
        sa.Column("disagreements", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.Text(), nullable=False),
        sa.Column("outlier_score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["probe_id"], ["probes.id"], name=op.f("fk_probe_scores_probe_id_probes")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["scoring_runs.id"],
            name=op.f("fk_probe_scores_run_id_scoring_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_scores")),
    )
    with op.batch_alter_table("probe_scores", schema=None) as batch_op:
        batch_op.create_index("ix_probe_scores_probe_run", ["probe_id", "run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_probe_scores_run_id"), ["run_id"], unique=False)

    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("factors", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("scores", schema=None) as batch_op:
        batch_op.drop_column("factors")
        batch_op.drop_column("status_since")

    with op.batch_alter_table("probe_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_scores_run_id"))
        batch_op.drop_index("ix_probe_scores_probe_run")

    op.drop_table("probe_scores")
