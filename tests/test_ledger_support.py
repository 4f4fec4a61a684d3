"""Small customer bases for the ledger, dispatch and run tests (tens to hundreds of rows)."""

from __future__ import annotations

from sqlalchemy import Engine, case, func, insert, literal, select

from core.models import Consent, Customer, Device, utcnow


def seed_customers(
    engine: Engine, n: int, phone_every: int = 0, missing_email_every: int = 0, prefix: str = "C"
) -> list[int]:
    """``n`` consenting customers with e-mail (and phone/device every k-th); return their ids."""
    now = utcnow()
    rows = []
    for i in range(1, n + 1):
        rows.append(
            {
                "external_id": f"{prefix}{i:06d}",
                "first_name": f"Prénom{i}",
                "last_name": f"Nom{i}",
                "email": None
                if missing_email_every and i % missing_email_every == 0
                else f"c{i}@example.org",
                "phone": f"+3361234{i:04d}" if phone_every and i % phone_every == 0 else None,
                "locale": "fr_FR",
                "timezone": "Europe/Paris",
                "created_at": now,
                "updated_at": now,
            }
        )
    c = Customer.__table__
    with engine.begin() as conn:
        before = conn.execute(select(func.coalesce(func.max(c.c.id), 0))).scalar_one()
        conn.execute(insert(c), rows)
        ids = list(conn.execute(select(c.c.id).where(c.c.id > before).order_by(c.c.id)).scalars())
        conn.execute(
            insert(Consent.__table__),
            [{"customer_id": i, "channel": ch, "status": "granted", "updated_at": now, "source": "test"}
             for i in ids for ch in ("email", "sms", "push")],
        )  # fmt: skip
        conn.execute(
            insert(Device.__table__),
            [{"customer_id": i, "token": f"tok-{i}", "platform": "android", "active": True} for i in ids],
        )
    return ids


def simple_selection(control_every: int = 10, channel: str = "email"):
    """Every customer on one channel, every k-th in the control group: the columns build_selection gives."""
    c = Customer.__table__
    return select(
        c.c.id.label("customer_id"),
        literal(channel).label("channel"),
        literal("default").label("variant"),
        literal("test/msg").label("message"),
        (case(((c.c.id % control_every) == 0, True), else_=False) if control_every else literal(False)).label(
            "in_control"
        ),
    )
