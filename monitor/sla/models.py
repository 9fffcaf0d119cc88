"""Rollups (docs/sla.md): what SLA and uptime queries read instead of raw results, and breach
events. Keyed by the SLA subject, one operator on one chain; minutes and hours are UTC starts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from monitor.db.base import Base, BigIntPK, UTCDateTime

_PROBE_FK = "probes.id"


class ProbeMinuteRow(Base):
    """One probe's checks of one subject in one minute (monitor.sla.judge.ProbeMinute)."""

    __tablename__ = "probe_minutes"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey(_PROBE_FK), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    available: Mapped[int] = mapped_column(Integer)
    judged: Mapped[int] = mapped_column(Integer)
    incorrect: Mapped[int] = mapped_column(Integer)
    lags: Mapped[str] = mapped_column(Text)  # JSON: lag blocks -> answers
    latency: Mapped[str] = mapped_column(Text)  # JSON: histogram bucket -> answers


class SubjectMinute(Base):
    """A minute's verdict (monitor.sla.judge.judge_minute)."""

    __tablename__ = "subject_minutes"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    state: Mapped[str] = mapped_column(String(12))  # up | down | insufficient
    reasons: Mapped[str] = mapped_column(String(64))  # comma-separated, for "down"
    probes: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(Integer)


class ProbeHour(Base):
    """One probe's checks of one subject in one hour: the sums of its probe-minutes."""

    __tablename__ = "probe_hours"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    probe_id: Mapped[int] = mapped_column(ForeignKey(_PROBE_FK), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    available: Mapped[int] = mapped_column(Integer)
    judged: Mapped[int] = mapped_column(Integer)
    incorrect: Mapped[int] = mapped_column(Integer)
    latency: Mapped[str] = mapped_column(Text)


class SubjectHour(Base):
    """One subject's minute verdicts in one hour, counted."""

    __tablename__ = "subject_hours"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    up: Mapped[int] = mapped_column(Integer)
    down: Mapped[int] = mapped_column(Integer)
    unavailable: Mapped[int] = mapped_column(Integer)  # down minutes by reason
    lagging: Mapped[int] = mapped_column(Integer)
    incorrect: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(Integer)


class BreachEvent(Base):
    """A subject's rolling SLA crossed a target (``ended_at`` None while it lasts)."""

    __tablename__ = "breach_events"
    __table_args__ = (Index("ix_breach_events_subject", "chain_id", "operator_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    operator_id: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(32))  # availability | latency_p95 | lag | ...
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)  # the figure against the target, in words
    figure: Mapped[int | None] = mapped_column(BigInteger)  # at the start (ppm or ms)
    threshold: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """An event notice to deliver to the webhook, kept until delivered (never blocks ingest)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("breach_events.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # breach_started | breach_ended
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
