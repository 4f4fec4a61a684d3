"""The customer's rights: export everything stored about them, and erase it (GDPR art. 15 and 17).

What ``forget`` keeps, and why: the customer row itself (with ``erased_at`` set
and every personal field emptied) so that the ledger's exactly-once guarantee,
reports and uplift figures stay whole; the external id, which is the shop's own
key (the shop erases its side itself), so that the next full customer export
from the shop updates this row instead of creating a new person, and the
importer refuses to refill an erased row; the orders (dates, amounts,
categories, products, payment methods) and the ledger rows, which without a
name, address or device are anonymous aggregates for revenue and uplift.
What goes: names, e-mail, phone, city, post code, birth year, gender,
devices, interests, model scores and recommendations (profiling), consent
proofs, and the raw provider payloads of events (they hold addresses).
Consents are withdrawn on every channel (source ``forget``) and the sha256 of
the e-mail and phone go to the suppression list (reason ``erased``), so an
import under another id cannot bring the person back as consenting.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, or_, select, update

from audiences import consent
from core.db import get_engine
from core.models import (
    CHANNELS,
    Consent,
    ConsentEvent,
    Customer,
    CustomerFeatures,
    CustomerInterest,
    CustomerScore,
    Device,
    Event,
    LedgerEntry,
    Order,
    Recommendation,
    ScoreVersion,
    Suppression,
    utcnow,
)

PERSONAL_FIELDS = ("first_name", "last_name", "email", "phone", "city", "postcode", "gender", "birth_year")


class UnknownCustomer(LookupError):
    pass


def find_customer(conn: Connection, ref: str) -> dict[str, Any]:
    """A customer by external id, or by internal id when ``ref`` is a number no external id matches."""
    t = Customer.__table__
    row = conn.execute(select(t).where(t.c.external_id == ref)).mappings().first()
    if row is None and ref.isdigit():
        row = conn.execute(select(t).where(t.c.id == int(ref))).mappings().first()
    if row is None:
        raise UnknownCustomer(f"no customer with external id (or id) {ref!r}")
    return dict(row)


def _rows(conn: Connection, table, where) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(table).where(where).order_by(*table.primary_key)).mappings()]


def _scores(conn: Connection, cid: int) -> list[dict[str, Any]]:
    """The customer's model scores, named by model and version (the table keys them by version id)."""
    s, v = CustomerScore.__table__, ScoreVersion.__table__
    q = (
        select(v.c.model, v.c.version, v.c.scored_at, *[c for c in s.c if c.name not in ("version_id",)])
        .join_from(s, v, v.c.id == s.c.version_id)
        .where(s.c.customer_id == cid)
        .order_by(v.c.model, v.c.scored_at)
    )
    return [dict(r) for r in conn.execute(q).mappings()]


def export(ref: str, engine: Engine | None = None) -> dict[str, Any]:
    """Everything stored about one customer, table by table."""
    with (engine or get_engine()).connect() as conn:
        customer = find_customer(conn, ref)
        cid = customer["id"]
        addresses = [a for a in (customer["email"], customer["phone"]) if a]
        sup = Suppression.__table__
        suppressions = (
            _rows(conn, sup, sup.c.address.in_(addresses + [consent.address_hash(a) for a in addresses]))
            if addresses
            else []
        )

        def of(model) -> list[dict[str, Any]]:
            return _rows(conn, model.__table__, model.__table__.c.customer_id == cid)

        return {
            "customer": customer,
            "interests": [r["tag"] for r in of(CustomerInterest)],
            "consents": of(Consent),
            "consent_history": of(ConsentEvent),
            "devices": of(Device),
            "orders": of(Order),
            "features": of(CustomerFeatures),
            "scores": _scores(conn, cid),
            "recommendations": of(Recommendation),
            "suppressions": suppressions,
            "messages": of(LedgerEntry),
            "events": of(Event),
        }


def to_json(data: dict[str, Any]) -> str:
    def default(value: Any) -> str:
        if isinstance(value, datetime | date):
            return value.isoformat()
        raise TypeError(f"cannot serialize {type(value).__name__}")

    return json.dumps(data, default=default, ensure_ascii=False, indent=2)


def forget(ref: str, engine: Engine | None = None) -> dict[str, Any]:
    """Erase one customer's personal data in one transaction; returns what was done (no personal data)."""
    with (engine or get_engine()).begin() as conn:
        customer = find_customer(conn, ref)
        cid = customer["id"]
        now = utcnow()
        for address in (customer["email"], customer["phone"]):
            if address:
                consent.suppress(conn, consent.address_hash(address), "erased", "*", source="forget")
                for channel in ("*", *CHANNELS):  # the hash on '*' replaces any clear-text entry
                    consent.unsuppress(conn, address, channel)
        for channel in CHANNELS:
            consent.withdraw(conn, cid, channel, source="forget")
        for model in (Consent, ConsentEvent):
            t = model.__table__
            conn.execute(update(t).where(t.c.customer_id == cid).values(proof=None))
        removed = {}
        for model in (Device, CustomerInterest, CustomerScore, Recommendation):
            t = model.__table__
            removed[t.name] = conn.execute(delete(t).where(t.c.customer_id == cid)).rowcount
        ev = Event.__table__
        conn.execute(
            update(ev)
            .where(or_(ev.c.customer_id == cid, ev.c.ledger_id.in_(_ledger_ids(cid))))
            .values(raw=None)
        )
        c = Customer.__table__
        erased_at = customer["erased_at"] or now
        conn.execute(
            update(c)
            .where(c.c.id == cid)
            .values(**dict.fromkeys(PERSONAL_FIELDS), erased_at=erased_at, updated_at=now)
        )
        return {"customer_id": cid, "external_id": customer["external_id"], "erased_at": erased_at, **removed}


def _ledger_ids(cid: int):
    t = LedgerEntry.__table__
    return select(t.c.id).where(t.c.customer_id == cid)
