"""The relational schema, shared by every package.

Why one module in relance/ rather than tables spread across audiences/ and
tracking/: selection (audiences) reads the ledger for frequency caps and
past-campaign rules, and tracking writes consent; both directions would break
the import order audiences -> channels -> tracking -> flows.

Conventions: datetimes are timezone-aware UTC (SQLModel's UTCDateTime refuses naive
ones; SQLite stores them without offset, PostgreSQL as timestamptz); money is integer cents; channels are
``email``, ``sms``, ``push``. The schema is created by Alembic migrations
(core/migrations), never by ``create_all`` on a live database.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, SmallInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    push = "push"


CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)


class ConsentStatus(StrEnum):
    granted = "granted"
    withdrawn = "withdrawn"


class Status(StrEnum):
    """Ledger statuses. Delivery statuses only move forward (see ``RANK``)."""

    planned = "planned"
    sending = "sending"
    sent = "sent"
    delivered = "delivered"
    opened = "opened"
    clicked = "clicked"
    converted = "converted"
    # final statuses that are not progress
    failed = "failed"
    bounced = "bounced"
    unknown = "unknown"  # may have reached the provider before a crash: never re-sent blindly
    skipped = "skipped"  # not sent, with a reason (template error, cap, missing address...)
    held_out = "held_out"  # control group: selected, deliberately not sent


# Forward-only progression: an update may only raise the rank.
RANK: dict[str, int] = {
    Status.planned: 0,
    Status.sending: 1,
    Status.unknown: 2,
    Status.sent: 3,
    Status.failed: 4,
    Status.bounced: 5,
    Status.delivered: 5,
    Status.opened: 6,
    Status.clicked: 7,
    Status.converted: 8,
    Status.skipped: 9,
    Status.held_out: 9,
}
FINAL_STATUSES = frozenset(s for s in Status if s not in (Status.planned, Status.sending))


def utcnow() -> datetime:
    """Aware UTC now: the storage convention of every datetime column."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------
# The customer base
# --------------------------------------------------------------------------


def _reach_flag() -> Any:
    return Field(default=0, sa_type=SmallInteger, sa_column_kwargs={"server_default": "0"})


class Customer(SQLModel, table=True):
    __tablename__ = "customer"

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=64, unique=True, index=True)
    first_name: str | None = Field(default=None, max_length=100)
    last_name: str | None = Field(default=None, max_length=100)
    email: str | None = Field(default=None, max_length=254, index=True)
    phone: str | None = Field(default=None, max_length=20, index=True)  # E.164
    locale: str = Field(default="fr_FR", max_length=10)
    timezone: str = Field(default="Europe/Paris", max_length=64, index=True)  # 0005: plan lists zones
    country: str | None = Field(default=None, max_length=2)  # ISO 3166-1 alpha-2
    city: str | None = Field(default=None, max_length=100)
    postcode: str | None = Field(default=None, max_length=16)
    gender: str | None = Field(default=None, max_length=1)  # F, M, X
    birth_year: int | None = None
    signup_date: date | None = None
    preferred_channel: str | None = Field(default=None, max_length=8)
    preferred_payment_method: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    erased_at: datetime | None = Field(default=None, index=True)  # `relance customers forget`; 0006
    # Reach flags (0/1), kept exact by triggers (migrations 0006, 0010), never written by code:
    # consent_<channel> = consent granted and a valid address (e-mail, phone, active device);
    # suppressed_<channel> = an address of the customer on the channel's suppression list or on '*'.
    consent_email: int = _reach_flag()
    consent_sms: int = _reach_flag()
    consent_push: int = _reach_flag()
    suppressed_email: int = _reach_flag()
    suppressed_sms: int = _reach_flag()
    suppressed_push: int = _reach_flag()


class CustomerInterest(SQLModel, table=True):
    """Interests as tags: one row per (customer, tag), so rules are indexed joins."""

    __tablename__ = "customer_interest"

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    tag: str = Field(primary_key=True, max_length=64, index=True)


class Consent(SQLModel, table=True):
    """Current consent per channel; the history with proof is in ``consent_event``."""

    __tablename__ = "consent"

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    channel: str = Field(primary_key=True, max_length=8)
    status: str = Field(max_length=16)  # ConsentStatus
    updated_at: datetime = Field(default_factory=utcnow)
    source: str = Field(default="import", max_length=32)
    proof: str | None = Field(default=None, sa_column=Column(Text))


class ConsentEvent(SQLModel, table=True):
    """Every grant or withdrawal: when, where (source) and how (proof), as GDPR asks."""

    __tablename__ = "consent_event"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=8)
    status: str = Field(max_length=16)
    at: datetime = Field(default_factory=utcnow)  # when the customer gave or withdrew it
    source: str = Field(max_length=32)  # import, webhook, stop_reply, unsubscribe, forget, api...
    proof: str | None = Field(default=None, sa_column=Column(Text))
    recorded_at: datetime = Field(default_factory=utcnow)


class Device(SQLModel, table=True):
    __tablename__ = "device"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    token: str = Field(max_length=512, unique=True)
    platform: str = Field(max_length=16)  # ios, android, web
    last_seen_at: datetime | None = None
    active: bool = True


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_customer_ordered", "customer_id", "ordered_at"),
        Index("ix_orders_category_ordered", "category", "ordered_at"),
        Index("ix_orders_category_ordered_customer", "category", "ordered_at", "customer_id"),  # 0002
    )

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    ordered_at: datetime
    amount_cents: int
    currency: str = Field(default="EUR", max_length=3)
    category: str | None = Field(default=None, max_length=64)
    product: str | None = Field(default=None, max_length=128)
    payment_method: str | None = Field(default=None, max_length=32)


class CustomerFeatures(SQLModel, table=True):
    """RFM and friends, computed in SQL (audiences.features); what segments and models read."""

    __tablename__ = "customer_features"

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    first_order_at: datetime | None = None
    last_order_at: datetime | None = Field(default=None, index=True)
    recency_days: int | None = None  # as of computed_at
    frequency: int = 0
    monetary_cents: int = 0
    avg_basket_cents: int = 0
    tenure_days: int = 0  # days since signup (or first order)
    favourite_category: str | None = Field(default=None, max_length=64)
    preferred_payment_method: str | None = Field(default=None, max_length=32)
    computed_at: datetime = Field(default_factory=utcnow)


class Suppression(SQLModel, table=True):
    """Addresses never to be contacted on a channel ('*' = every channel).

    ``address`` is a normalized e-mail or E.164 number, or ``sha256:<hex>`` of one
    for erased customers, so that a later import cannot bring them back as consenting.
    """

    __tablename__ = "suppression"
    __table_args__ = (UniqueConstraint("channel", "address", name="uq_suppression_channel_address"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(default="*", max_length=8)
    address: str = Field(max_length=254, index=True)
    reason: str = Field(max_length=32)  # unsubscribed, hard_bounce, complaint, stop, erased, imported
    source: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ScoreVersion(SQLModel, table=True):
    """One row per scored (model, version): the small integer that keys its scores (migration 0009).

    Why: each score row and index entry carried the model and version names; keyed by an integer,
    a million-row version is written in ~60 % of the time (SQLite, notes/7-learning.md).
    """

    __tablename__ = "score_version"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_score_version_model_version"),)

    id: int | None = Field(default=None, primary_key=True)
    model: str = Field(max_length=32)
    version: str = Field(max_length=64)
    scored_at: datetime = Field(default_factory=utcnow)


class CustomerScore(SQLModel, table=True):
    """Model scores written in batches so that selection stays one SQL query."""

    __tablename__ = "customer_score"
    __table_args__ = (
        Index("ix_customer_score_version_score", "version_id", "score"),
        {"sqlite_with_rowid": False},
    )

    version_id: int = Field(foreign_key="score_version.id", primary_key=True, ondelete="CASCADE")
    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    score: float
    # response model only (migration 0007): P(response | channel), read by the `best` channel strategy
    score_email: float | None = None
    score_sms: float | None = None
    score_push: float | None = None


class Recommendation(SQLModel, table=True):
    """Next best products per customer (item-to-item co-purchase), offered to templates."""

    __tablename__ = "recommendation"

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    rank: int = Field(primary_key=True)
    item: str = Field(max_length=128)
    score: float = 0.0
    model_version: str | None = Field(default=None, max_length=64)


# --------------------------------------------------------------------------
# Runs, the send ledger and events
# --------------------------------------------------------------------------


class CampaignRun(SQLModel, table=True):
    """One execution of a campaign. ``key`` makes a restarted run the same run."""

    __tablename__ = "campaign_run"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, unique=True)  # e.g. "winback:2026-11-22"
    campaign: str = Field(max_length=100, index=True)
    spec_hash: str | None = Field(default=None, max_length=64)
    status: str = Field(default="planned", max_length=16)  # planned, running, paused, completed, failed
    paused_reason: str | None = Field(default=None, sa_column=Column(Text))
    funnel: str | None = Field(default=None, sa_column=Column(Text))  # JSON: the plan's funnel
    models: str | None = Field(default=None, sa_column=Column(Text))  # JSON: model versions used
    flow_run_id: str | None = Field(default=None, max_length=64)
    step: str | None = Field(default=None, max_length=64)  # journeys: the send step of this run (0011)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class LedgerEntry(SQLModel, table=True):
    """One message: a row per (run, customer, channel), written before any send."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("run_id", "customer_id", "channel", name="uq_ledger_run_customer_channel"),
        Index("ix_ledger_run_batch_status", "run_id", "batch", "status"),
        Index("ix_ledger_customer_sent_status", "customer_id", "sent_at", "channel", "status"),  # 0008: caps
        Index("ix_ledger_sent_customer", "sent_at", "customer_id", "channel", "status"),  # 0004: caps window
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="campaign_run.id")
    campaign: str = Field(max_length=100, index=True)
    customer_id: int = Field(foreign_key="customer.id")
    channel: str = Field(max_length=8)
    variant: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=200)  # template folder
    in_control: bool = False
    batch: int = 0
    status: str = Field(default=Status.planned, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text))  # skip or failure reason
    provider: str | None = Field(default=None, max_length=16)
    provider_message_id: str | None = Field(default=None, max_length=128, index=True)
    attempts: int = 0
    cost_units: float | None = None  # SMS segments
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    # journeys (0011): the entry and send step this message belongs to; null for campaigns
    entry_id: int | None = Field(default=None, index=True)
    step: str | None = Field(default=None, max_length=64)


class Link(SQLModel, table=True):
    """Each distinct target URL of short SMS links, stored once (a campaign has few).

    ``/s/<code>`` carries the ledger id and this row's id, signed (core.tokens.make_short_code);
    rows are never updated or deleted, so a link id means the same URL for ever.
    """

    __tablename__ = "link"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class SendBatch(SQLModel, table=True):
    """Batches of a run, claimed by workers (FOR UPDATE SKIP LOCKED on PostgreSQL)."""

    __tablename__ = "send_batch"

    run_id: int = Field(foreign_key="campaign_run.id", primary_key=True)
    batch: int = Field(primary_key=True)
    status: str = Field(default="pending", max_length=16)  # pending, claimed, done
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = None
    finished_at: datetime | None = None


class Event(SQLModel, table=True):
    """A normalized response event from any provider, with the raw payload for audit."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("provider", "provider_event_id", name="uq_event_provider_event"),
        Index("ix_event_run_type", "run_id", "type"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ledger_id: int | None = Field(default=None, foreign_key="ledger.id", index=True)
    customer_id: int | None = Field(default=None, index=True)
    run_id: int | None = None
    type: str = Field(max_length=16)  # delivered, bounced, deferred, opened, clicked, complained, ...
    subtype: str | None = Field(default=None, max_length=32)  # hard / soft, ...
    provider: str = Field(max_length=16)
    provider_event_id: str | None = Field(default=None, max_length=128)
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    machine: bool = False  # machine open (Apple MPP, scanners)
    url: str | None = Field(default=None, sa_column=Column(Text))
    revenue_cents: int | None = None
    raw: str | None = Field(default=None, sa_column=Column(Text))


# --------------------------------------------------------------------------
# Journeys (migration 0011)
# --------------------------------------------------------------------------


class EntryStatus(StrEnum):
    active = "active"  # on ``step``, which acts at ``due_at``
    control = "control"  # held out at entry for the whole journey: never sent anything
    completed = "completed"  # went past the last step, or reached an `exit` step
    exited = "exited"  # left early: exit_when, a removed step (``exit_reason`` says which)


class JourneyEntry(SQLModel, table=True):
    """One customer's pass through a journey: where they are, when it acts, how they left.

    Ticks move entries set-based (journeys.tick): every statement is guarded by
    (journey, step, status, due_at), so an entry moves once per due step.
    """

    __tablename__ = "journey_entry"
    __table_args__ = (
        UniqueConstraint("journey", "customer_id", "entry_key", name="uq_journey_entry_key"),
        Index("ix_journey_entry_step_due", "journey", "step", "status", "due_at"),
        Index("ix_journey_entry_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    journey: str = Field(max_length=100)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    entry_key: str = Field(max_length=200)  # what put the customer in: "<journey>:<date>", an event id...
    step: str = Field(max_length=64)  # the current step (the last one for entries that left)
    status: str = Field(default=EntryStatus.active, max_length=16)
    due_at: datetime | None = None  # when the current step acts (null once left)
    since: datetime = Field(default_factory=utcnow)  # arrived at the current step
    moves: int = 0  # steps done so far: the next history row's number
    in_control: bool = False
    exit_reason: str | None = Field(default=None, max_length=200)
    entered_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class JourneyCursor(SQLModel, table=True):
    """How far a triggered journey has read ``customer_event`` (migration 0013)."""

    __tablename__ = "journey_cursor"

    journey: str = Field(max_length=100, primary_key=True)
    last_event_id: int = Field(sa_type=BigInteger)  # events up to this id have been considered
    updated_at: datetime = Field(default_factory=utcnow)


class JourneyStepLog(SQLModel, table=True):
    """The history of an entry: one row per step done, numbered by ``move`` (unique per entry)."""

    __tablename__ = "journey_step"
    __table_args__ = (UniqueConstraint("entry_id", "move", name="uq_journey_step_entry_move"),)

    id: int | None = Field(default=None, primary_key=True)
    entry_id: int = Field(foreign_key="journey_entry.id", ondelete="CASCADE")
    move: int
    journey: str = Field(max_length=100, index=True)
    step: str = Field(max_length=64)
    kind: str = Field(max_length=8)  # send, wait, branch, split, exit; "journey" for exit_when
    outcome: str = Field(max_length=64)  # sent, skipped, waited, then, else, the path taken, the exit reason
    detail: str | None = Field(default=None, sa_column=Column(Text))
    run_id: int | None = None  # send steps: the campaign_run holding the ledger rows
    at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------
# Customer events (migration 0012, issue 18)
# --------------------------------------------------------------------------


class CustomerEvent(SQLModel, table=True):
    """Something a customer did: sent by the shop (``POST /events``), imported, or derived by relance.

    ``event_id`` is the sender's id (unique: ingestion is idempotent); ``customer_id`` stays null
    until the customer is imported (attached by ``external_id``, then normalized ``email``).
    ``properties`` are typed by the declared event types (audiences/events.yaml, audiences.event_types).
    """

    __tablename__ = "customer_event"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_customer_event_event_id"),
        Index("ix_customer_event_type_occurred", "type", "occurred_at"),
        Index("ix_customer_event_customer_type_occurred", "customer_id", "type", "occurred_at"),
        Index("ix_customer_event_external_id", "external_id"),
        Index("ix_customer_event_email", "email"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128)
    type: str = Field(max_length=64)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", ondelete="CASCADE")
    external_id: str | None = Field(default=None, max_length=64)  # as given by the sender
    email: str | None = Field(default=None, max_length=254)  # normalized (audiences.normalize.email)
    occurred_at: datetime
    received_at: datetime = Field(default_factory=utcnow)
    properties: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    source: str = Field(default="api", max_length=8)  # api, import, relance
