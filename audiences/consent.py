"""Consent and suppression changes, applied at once and with their proof.

Every path that learns a customer's wish (import, unsubscribe link, STOP
reply, hard bounce, complaint, provider error, forget) goes through these
functions, so the current state (``consent``), its history
(``consent_event``) and the suppression list never disagree. They take a
SQLAlchemy Connection and do not commit: the caller's transaction makes the
change atomic with whatever caused it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.models import Consent, ConsentEvent, ConsentStatus, Device, Suppression, utcnow

# Suppression reasons that also withdraw consent on the channel.
WITHDRAWING_REASONS = frozenset({"unsubscribed", "hard_bounce", "complaint", "stop", "erased", "invalid"})


def _insert(conn: Connection, table):
    """Dialect insert with ON CONFLICT support (SQLite and PostgreSQL)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def set_consent(
    conn: Connection,
    customer_id: int,
    channel: str,
    status: ConsentStatus | str,
    source: str,
    proof: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record a grant or withdrawal: current state upserted, history appended."""
    at = at or utcnow()
    status = ConsentStatus(status).value
    table = Consent.__table__
    stmt = _insert(conn, table).values(
        customer_id=customer_id, channel=channel, status=status, updated_at=at, source=source, proof=proof
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.customer_id, table.c.channel],
            set_={"status": status, "updated_at": at, "source": source, "proof": proof},
        )
    )
    conn.execute(
        ConsentEvent.__table__.insert().values(
            customer_id=customer_id,
            channel=channel,
            status=status,
            at=at,
            source=source,
            proof=proof,
            recorded_at=utcnow(),
        )
    )


def withdraw(conn: Connection, customer_id: int, channel: str, source: str, proof: str | None = None) -> None:
    set_consent(conn, customer_id, channel, ConsentStatus.withdrawn, source, proof)


def address_hash(address: str) -> str:
    """The form under which an erased customer's address stays suppressed."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()


def suppress(
    conn: Connection, address: str, reason: str, channel: str = "*", source: str | None = None
) -> None:
    """Add an address to the suppression list (idempotent)."""
    stmt = _insert(conn, Suppression.__table__).values(
        channel=channel, address=address, reason=reason, source=source, created_at=utcnow()
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["channel", "address"]))


def unsuppress(conn: Connection, address: str, channel: str) -> None:
    """Lift a suppression (a START reply after STOP); erasures are never lifted."""
    table = Suppression.__table__
    conn.execute(
        table.delete().where(
            table.c.channel == channel, table.c.address == address, table.c.reason != "erased"
        )
    )


def is_suppressed(conn: Connection, address: str, channel: str) -> bool:
    """True if the address (or its erased hash) is suppressed on this channel or on all."""
    table = Suppression.__table__
    row = conn.execute(
        select(table.c.id)
        .where(table.c.address.in_([address, address_hash(address)]), table.c.channel.in_([channel, "*"]))
        .limit(1)
    ).first()
    return row is not None


def deactivate_device(conn: Connection, token: str) -> int:
    """A push token the platform says is gone (FCM UNREGISTERED): never used again."""
    table = Device.__table__
    return conn.execute(update(table).where(table.c.token == token).values(active=False)).rowcount
