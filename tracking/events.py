"""The normalized event store shared by every provider.

SendGrid batches, Twilio callbacks, our own links and conversions all become
``NormalizedEvent`` values and go through ``store_events``, which, in the
caller's transaction:

1. ties each event to its ledger row (by ledger id, or by the provider's
   message id for Twilio) and so to its customer and run;
2. bulk-inserts the batch with ON CONFLICT DO NOTHING on
   (provider, provider_event_id): a redelivered webhook is stored once;
3. for the events that were new only, settles rows left ``unknown`` by a
   crash with what the events prove (``processed`` = the provider accepted
   it: ``sent``), raises ledger statuses set-based
   (``tracking.status.advance``) and applies consent and suppression changes
   (hard bounces, complaints, unsubscribes, STOP; resubscriptions), so a
   duplicate never records a second consent change.

Event types: delivered, bounced (hard/soft), deferred, opened (machine
flag), clicked, complained, unsubscribed, resubscribed, converted, replied,
failed, processed (accepted by the provider, no status change) and purchased
(a treated customer's purchase within the conversion window that attribution
did not credit to this message: counted by the report's uplift, no status
change; see tracking.attribution).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from audiences.consent import set_consent, suppress, unsuppress, withdraw
from core.models import ConsentStatus, Customer, Event, LedgerEntry, Status, utcnow
from tracking.status import advance, settle_unknown

EVENT_TYPES = frozenset(
    {
        "processed",
        "delivered",
        "deferred",
        "bounced",
        "failed",
        "opened",
        "clicked",
        "complained",
        "unsubscribed",
        "resubscribed",
        "converted",
        "purchased",
        "replied",
    }
)

# The ledger status an event proves. Machine opens and clicks (proxies,
# scanners) prove delivery only, so they never inflate opened/clicked.
_STATUS_OF = {
    "delivered": Status.delivered,
    "opened": Status.opened,
    "clicked": Status.clicked,
    "converted": Status.converted,
    "bounced": Status.bounced,
    "failed": Status.failed,
    "complained": Status.delivered,
}

# Events that prove the provider accepted a message without a status of their own: they settle a
# row left ``unknown`` by a crash as ``sent`` (and change nothing on any other row).
_ACCEPTED = frozenset({"processed", "deferred"})

# Suppression reason applied (with consent withdrawal) by event type.
_SUPPRESSING = {"complained": "complaint", "unsubscribed": "unsubscribed"}


@dataclass
class NormalizedEvent:
    """One response, whatever its provider. ``raw`` is kept verbatim for audit."""

    type: str
    provider: str
    occurred_at: datetime
    provider_event_id: str | None = None
    ledger_id: int | None = None
    provider_message_id: str | None = None  # used to find the ledger row when ledger_id is unknown
    customer_id: int | None = None
    run_id: int | None = None
    subtype: str | None = None
    machine: bool = False
    url: str | None = None
    revenue_cents: int | None = None
    reason: str | None = None  # written on the ledger row for bounced / failed
    raw: Any = None
    # consent side effects
    channel: str | None = None  # defaults to the ledger row's channel
    address: str | None = None  # the provider's address, used when no customer is known
    suppress_reason: str | None = None  # overrides the default by type (e.g. "stop", "hard_bounce")
    restore: bool = False  # resubscription: consent granted again, suppression lifted
    consent_source: str = "webhook"
    proof: str | None = None  # defaults to provider:type:event id

    def key(self) -> tuple[str, str]:
        return (self.provider, self.provider_event_id or "")

    def suppression(self) -> str | None:
        if self.suppress_reason:
            return self.suppress_reason
        if self.type == "bounced" and self.subtype == "hard":
            return "hard_bounce"
        return _SUPPRESSING.get(self.type)


@dataclass
class StoreResult:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    advanced: int = 0
    new: list[NormalizedEvent] = field(default_factory=list)


def _insert(conn: Connection, table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _chunks(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _resolve_ledger(conn: Connection, events: list[NormalizedEvent]) -> None:
    """Fill ledger_id, customer_id, run_id and channel from the ledger, set-based."""
    table = LedgerEntry.__table__
    by_message = {e.provider_message_id for e in events if e.ledger_id is None and e.provider_message_id}
    if by_message:
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(by_message)):
            rows = conn.execute(
                select(table.c.provider_message_id, table.c.id).where(table.c.provider_message_id.in_(chunk))
            )
            found.update({mid: lid for mid, lid in rows})
        for e in events:
            if e.ledger_id is None and e.provider_message_id in found:
                e.ledger_id = found[e.provider_message_id]
    ids = sorted({e.ledger_id for e in events if e.ledger_id is not None})
    ledger: dict[int, tuple] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(
            select(table.c.id, table.c.customer_id, table.c.run_id, table.c.channel).where(
                table.c.id.in_(chunk)
            )
        )
        ledger.update({row.id: (row.customer_id, row.run_id, row.channel) for row in rows})
    for e in events:
        if e.ledger_id is None:
            continue
        if e.ledger_id not in ledger:  # not ours (or deleted): kept, unattached, for audit
            e.ledger_id = None
            continue
        customer_id, run_id, channel = ledger[e.ledger_id]
        e.customer_id, e.run_id = customer_id, run_id
        e.channel = e.channel or channel


def _row(e: NormalizedEvent, now: datetime) -> dict:
    raw = e.raw if isinstance(e.raw, str) or e.raw is None else json.dumps(e.raw, default=str)
    return {
        "ledger_id": e.ledger_id,
        "customer_id": e.customer_id,
        "run_id": e.run_id,
        "type": e.type[:16],
        "subtype": (e.subtype or None) and e.subtype[:32],
        "provider": e.provider[:16],
        "provider_event_id": e.provider_event_id[:128] if e.provider_event_id else None,
        "occurred_at": e.occurred_at,
        "received_at": now,
        "machine": bool(e.machine),
        "url": e.url,
        "revenue_cents": e.revenue_cents,
        "raw": raw,
    }


def _proven_status(e: NormalizedEvent) -> Status | None:
    if e.type in _ACCEPTED:
        return Status.sent
    status = _STATUS_OF.get(e.type)
    if e.machine and status in (Status.opened, Status.clicked):
        return Status.delivered
    return status


def _settle_unknown(conn: Connection, events: list[NormalizedEvent]) -> int:
    """Rows left ``unknown`` by a crash take what the provider's events prove (highest rank wins)."""
    from core.models import RANK

    proving = [e for e in events if e.ledger_id is not None and _proven_status(e) is not None]
    if not proving:
        return 0
    table = LedgerEntry.__table__
    unknown: set[int] = set()
    for chunk in _chunks(sorted({e.ledger_id for e in proving})):
        unknown.update(
            conn.execute(
                select(table.c.id).where(table.c.id.in_(chunk), table.c.status == str(Status.unknown))
            ).scalars()
        )
    best: dict[int, tuple[Status, NormalizedEvent]] = {}
    for e in proving:
        if e.ledger_id not in unknown:
            continue
        status = _proven_status(e)
        held = best.get(e.ledger_id)
        if held is None or RANK[status] > RANK[held[0]]:
            best[e.ledger_id] = (status, e)
    return settle_unknown(
        conn,
        [
            {
                "ledger_id": ledger_id,
                "status": status,
                "reason": f"reconciled: {e.provider} {e.type} event" + (f"; {e.reason}" if e.reason else ""),
                "at": e.occurred_at,
                "provider_message_id": e.provider_message_id,
            }
            for ledger_id, (status, e) in best.items()
        ],
    )


def _advance_statuses(conn: Connection, events: list[NormalizedEvent]) -> int:
    groups: dict[tuple[Status, str | None], list[int]] = defaultdict(list)
    for e in events:
        if e.ledger_id is None or e.type not in _STATUS_OF:
            continue
        status = _STATUS_OF[e.type]
        if e.machine and status in (Status.opened, Status.clicked):
            status = Status.delivered
        reason = e.reason if status in (Status.bounced, Status.failed) else None
        groups[(status, reason)].append(e.ledger_id)
    return sum(advance(conn, ids, status, reason) for (status, reason), ids in groups.items())


def _apply_consent(conn: Connection, events: list[NormalizedEvent]) -> None:
    acting = [e for e in events if e.restore or e.suppression()]
    if not acting:
        return
    table = Customer.__table__
    ids = sorted({e.customer_id for e in acting if e.customer_id is not None})
    customers: dict[int, tuple] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(select(table.c.id, table.c.email, table.c.phone).where(table.c.id.in_(chunk)))
        customers.update({row.id: (row.email, row.phone) for row in rows})
    for e in acting:
        channel = e.channel or "email"
        email, phone = customers.get(e.customer_id, (None, None))
        # The address as stored on the customer is what selection compares with.
        address = (phone if channel == "sms" else email) or e.address
        proof = e.proof or f"{e.provider}:{e.type}:{e.provider_event_id}"
        if e.restore:
            if e.customer_id in customers:
                set_consent(conn, e.customer_id, channel, ConsentStatus.granted, e.consent_source, proof)
            if address:
                unsuppress(conn, address, channel)
            continue
        if e.customer_id in customers:
            withdraw(conn, e.customer_id, channel, e.consent_source, proof)
        if address:
            suppress(conn, address, e.suppression(), channel=channel, source=e.provider)


def store_events(conn: Connection, events: list[NormalizedEvent]) -> StoreResult:
    """Store a batch once, then apply its consequences; does not commit (see module doc)."""
    result = StoreResult(received=len(events))
    if not events:
        return result
    for e in events:
        if not e.provider_event_id:  # our own events have no natural id: each one is distinct
            e.provider_event_id = uuid.uuid4().hex
    unique: dict[tuple[str, str], NormalizedEvent] = {}
    for e in events:
        unique.setdefault(e.key(), e)
    batch = list(unique.values())
    _resolve_ledger(conn, batch)
    now = utcnow()
    table = Event.__table__
    stmt = (
        _insert(conn, table)
        .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
        .returning(table.c.provider, table.c.provider_event_id)
    )
    inserted: set[tuple[str, str]] = set()
    for chunk in _chunks(batch):
        inserted.update((p, k) for p, k in conn.execute(stmt, [_row(e, now) for e in chunk]))
    result.new = [e for e in batch if (e.provider[:16], (e.provider_event_id or "")[:128]) in inserted]
    result.inserted = len(result.new)
    result.duplicates = len(events) - result.inserted
    result.advanced = _settle_unknown(conn, result.new) + _advance_statuses(conn, result.new)
    _apply_consent(conn, result.new)
    return result
