"""Helpers for the selection tests: insert a small hand-made base directly (no importer)."""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert

from core.models import (
    CampaignRun,
    Consent,
    Customer,
    CustomerFeatures,
    CustomerInterest,
    Device,
    LedgerEntry,
    Order,
    Suppression,
)
from core.spec import Campaign

T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday, 11:00 in Paris, 14:00 in Reunion


def add_customer(
    conn: Connection,
    ext: str,
    *,
    consent: tuple[str, ...] = ("email", "sms", "push"),
    withdrawn: tuple[str, ...] = (),
    email: str | None = "",
    phone: str | None = "",
    device: bool = True,
    orders: list[tuple[int, str, int]] = (),  # (days ago, category, euros)
    interests: tuple[str, ...] = (),
    features: bool = True,
    now: datetime = T0,
    **fields: Any,
) -> int:
    """One customer with consents, a device, orders and (computed here) features; returns its id."""
    row = {
        "external_id": ext,
        "email": f"{ext}@example.fr" if email == "" else email,
        "phone": f"+336{zlib.crc32(ext.encode()) % 100_000_000:08d}" if phone == "" else phone,
        "locale": "fr_FR",
        "timezone": "Europe/Paris",
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    table = Customer.__table__
    cid = conn.execute(insert(table).values(**row).returning(table.c.id)).scalar_one()
    for ch in consent:
        conn.execute(
            insert(Consent.__table__).values(
                customer_id=cid, channel=ch, status="withdrawn" if ch in withdrawn else "granted",
                updated_at=now, source="test",
            )
        )  # fmt: skip
    if device:
        conn.execute(insert(Device.__table__).values(customer_id=cid, token=f"tok-{ext}", platform="android"))
    for i, (ago, cat, euros) in enumerate(orders):
        conn.execute(
            insert(Order.__table__).values(
                external_id=f"{ext}-o{i}", customer_id=cid, ordered_at=now - timedelta(days=ago),
                amount_cents=euros * 100, category=cat, product=f"{cat}-p",
            )
        )  # fmt: skip
    for tag in interests:
        conn.execute(insert(CustomerInterest.__table__).values(customer_id=cid, tag=tag))
    if features and orders:
        last = min(o[0] for o in orders)
        total = sum(o[2] for o in orders) * 100
        conn.execute(
            insert(CustomerFeatures.__table__).values(
                customer_id=cid, first_order_at=now - timedelta(days=max(o[0] for o in orders)),
                last_order_at=now - timedelta(days=last), recency_days=last, frequency=len(orders),
                monetary_cents=total, avg_basket_cents=total // len(orders), tenure_days=0,
                favourite_category=orders[0][1], computed_at=now,
            )
        )  # fmt: skip
    return cid


def suppress(conn: Connection, address: str, channel: str = "*", reason: str = "unsubscribed") -> None:
    conn.execute(insert(Suppression.__table__).values(channel=channel, address=address, reason=reason))


def add_run(conn: Connection, campaign: str, key: str | None = None) -> int:
    return conn.execute(
        insert(CampaignRun.__table__)
        .values(key=key or f"{campaign}:{uuid.uuid4().hex}", campaign=campaign, status="completed")
        .returning(CampaignRun.__table__.c.id)
    ).scalar_one()


def add_sent(
    conn: Connection,
    run_id: int,
    campaign: str,
    cid: int,
    channel: str,
    sent_at: datetime,
    status: str = "sent",  # noqa: E501
) -> None:
    conn.execute(
        insert(LedgerEntry.__table__).values(
            run_id=run_id, campaign=campaign, customer_id=cid, channel=channel, status=status,
            sent_at=sent_at, created_at=sent_at, updated_at=sent_at,
        )
    )  # fmt: skip


def campaign(**kw: Any) -> Campaign:
    data = {"name": "test", "message": "promo/main", "control_group": {"percent": 0}}
    data.update(kw)
    return Campaign.model_validate(data)


def ids_by_ext(conn: Connection) -> dict[int, str]:
    from sqlalchemy import select

    t = Customer.__table__
    return dict(conn.execute(select(t.c.id, t.c.external_id)).all())


def selected(conn: Connection, camp: Campaign, now: datetime = T0, **kw: Any) -> set[tuple[str, str]]:
    """(external_id, channel) of the rows the run would record (control rows included)."""
    from audiences.selection import build_selection

    names = ids_by_ext(conn)
    rows = conn.execute(build_selection(camp, now, bind=conn, priorities=kw.pop("priorities", {}), **kw))
    return {(names[r.customer_id], r.channel) for r in rows}


def members(conn: Connection, camp: Campaign, now: datetime = T0, **kw: Any) -> set[str]:
    return {ext for ext, _ in selected(conn, camp, now, **kw)}


UNUSED = date  # keep the import for callers building signup dates
