"""sla rollups, attestations, breach events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:21:05.529282
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from eth_utils import keccak

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attestations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence_root", sa.String(length=66), nullable=False),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("policy_hash", sa.String(length=66), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("violations", sa.Text(), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("typed_data", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=132), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestations")),
    )
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_attestations_subject", ["chain_id", "operator_id", "period_start"], unique=False
        )

    op.create_table(
        "breach_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("figure", sa.BigInteger(), nullable=True),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breach_events")),
    )
    with op.batch_alter_table("breach_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_breach_events_started_at"), ["started_at"], unique=False
        )
        batch_op.create_index(
            "ix_breach_events_subject", ["chain_id", "operator_id", "started_at"], unique=False
        )

    op.create_table(
        "documents",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_documents")),
    )
    op.create_table(
        "subject_hours",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("up", sa.Integer(), nullable=False),
        sa.Column("down", sa.Integer(), nullable=False),
        sa.Column("unavailable", sa.Integer(), nullable=False),
        sa.Column("lagging", sa.Integer(), nullable=False),
        sa.Column("incorrect", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "operator_id", "hour", name=op.f("pk_subject_hours")),
    )
    op.create_table(
        "subject_minutes",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("reasons", sa.String(length=64), nullable=False),
        sa.Column("probes", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "chain_id", "operator_id", "minute", name=op.f("pk_subject_minutes")
        ),
    )
    op.create_table(
        "probe_hours",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("judged", sa.Integer(), nullable=False),
        sa.Column("incorrect", sa.Integer(), nullable=False),
        sa.Column("latency", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["probe_id"], ["probes.id"], name=op.f("fk_probe_hours_probe_id_probes")
        ),
        sa.PrimaryKeyConstraint(
            "chain_id", "operator_id", "hour", "probe_id", name=op.f("pk_probe_hours")
        ),
    )
    op.create_table(
        "probe_minutes",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("judged", sa.Integer(), nullable=False),
        sa.Column("incorrect", sa.Integer(), nullable=False),
        sa.Column("lags", sa.Text(), nullable=False),
        sa.Column("latency", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["probe_id"], ["probes.id"], name=op.f("fk_probe_minutes_probe_id_probes")
        ),
        sa.PrimaryKeyConstraint(
            "chain_id", "operator_id", "minute", "probe_id", name=op.f("pk_probe_minutes")
        ),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["breach_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_breach_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_event_id"), ["event_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "attestation_batches",
        sa.Column(
            "attestation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["attestation_id"],
            ["attestations.id"],
            name=op.f("fk_attestation_batches_attestation_id_attestations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_attestation_batches_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("attestation_id", "batch_id", name=op.f("pk_attestation_batches")),
    )
    with op.batch_alter_table("attestation_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attestation_batches_batch_id"), ["batch_id"], unique=False
        )

    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(
            sa.Column("rolled_up", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index("ix_batches_rolled_up", ["rolled_up", "id"], unique=False)

    # Stored batches get their hash (keccak256 of the body's bytes), then it becomes required.
    batches = sa.table("batches", sa.column("id"), sa.column("body"), sa.column("body_hash"))
    connection = op.get_bind()
    for batch_id, body in connection.execute(sa.select(batches.c.id, batches.c.body)).all():
        connection.execute(
            batches.update()
            .where(batches.c.id == batch_id)
            .values(body_hash="0x" + keccak(body.encode()).hex())
        )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.alter_column("body_hash", existing_type=sa.String(length=66), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_batches_body_hash"), ["body_hash"])

    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla", sa.Text(), server_default="{}", nullable=False))

    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla", sa.Text(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.drop_column("sla")

    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.drop_column("sla")

    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_batches_body_hash"), type_="unique")
        batch_op.drop_index("ix_batches_rolled_up")
        batch_op.drop_column("rolled_up")
        batch_op.drop_column("body_hash")

    with op.batch_alter_table("attestation_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestation_batches_batch_id"))

    op.drop_table("attestation_batches")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_event_id"))

    op.drop_table("webhook_deliveries")
    op.drop_table("probe_minutes")
    op.drop_table("probe_hours")
    op.drop_table("subject_minutes")
    op.drop_table("subject_hours")
    op.drop_table("documents")
    with op.batch_alter_table("breach_events", schema=None) as batch_op:
        batch_op.drop_index("ix_breach_events_subject")
        batch_op.drop_index(batch_op.f("ix_breach_events_started_at"))

    op.drop_table("breach_events")
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.drop_index("ix_attestations_subject")

    op.drop_table("attestations")
