"""Issued attestations, the batches each one commits to (kept past raw retention) and the
countersignatures of other collectors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from monitor.db.base import Base, BigIntPK, UTCDateTime


class Attestation(Base):
    __tablename__ = "attestations"
    __table_args__ = (Index("ix_attestations_subject", "chain_id", "operator_id", "period_start"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    operator_id: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    evidence_root: Mapped[str] = mapped_column(String(66))
    batch_count: Mapped[int] = mapped_column(Integer)
    policy_hash: Mapped[str] = mapped_column(String(66))
    policy: Mapped[str] = mapped_column(Text)  # canonical JSON of the penalty policy it hashes
    violations: Mapped[str] = mapped_column(Text)  # JSON list of violation kinds (repeat lookup)
    signer: Mapped[str] = mapped_column(String(42))
    typed_data: Mapped[str] = mapped_column(Text)  # JSON: the full EIP-712 typed data
    signature: Mapped[str] = mapped_column(String(132))


class AttestationBatch(Base):
    __tablename__ = "attestation_batches"

    attestation_id: Mapped[int] = mapped_column(
        ForeignKey("attestations.id", ondelete="CASCADE"), primary_key=True
    )
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), primary_key=True, index=True)


class AttestationSignature(Base):
    """A countersignature: another collector's signature over exactly the attestation's typed
    data (the issuer's own stays in ``attestations.signature``); verified before it is stored."""

    __tablename__ = "attestation_signatures"

    attestation_id: Mapped[int] = mapped_column(
        ForeignKey("attestations.id", ondelete="CASCADE"), primary_key=True
    )
    signer: Mapped[str] = mapped_column(String(42), primary_key=True)  # EIP-55, as recovered
    signature: Mapped[str] = mapped_column(String(132))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Document(Base):
    """A registry section kept whole and identified by its hash (the penalty policy)."""

    __tablename__ = "documents"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text)  # canonical JSON
    hash: Mapped[str] = mapped_column(String(66))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
