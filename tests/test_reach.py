"""The reach flags of customer (0006, 0010) stay equal to what the source tables say, after every change.

The expected flags are computed here in Python from customer, consent, device
and suppression, independently of the triggers' SQL; each step changes the
base through the code paths relance uses (audiences.consent, privacy.forget)
or plain SQL as an operator would, then compares every row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, delete, insert, select, text, update

from audiences import consent, privacy
from core.db import alembic_config, get_engine, migrate
from core.models import CHANNELS, Consent, Customer, Device, Suppression

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CUSTOMER, CONSENT, DEVICE = Customer.__table__, Consent.__table__, Device.__table__
SUPPRESSION = Suppression.__table__
OWN = {"email": ("email",), "sms": ("phone",), "push": ("email", "phone")}


def expected(conn: Connection) -> dict[int, tuple[int, ...]]:
    granted = {(r.customer_id, r.channel) for r in conn.execute(select(CONSENT)) if r.status == "granted"}
    active = {r.customer_id for r in conn.execute(select(DEVICE)) if r.active}
    lists = {(r.address, r.channel) for r in conn.execute(select(SUPPRESSION))}
    out = {}
    for c in conn.execute(select(CUSTOMER)):
        addr = {"email": c.email, "phone": c.phone}
        valid = {"email": bool(c.email), "sms": bool(c.phone), "push": c.id in active}
        ok = [int((c.id, ch) in granted and valid[ch]) for ch in CHANNELS]
        on_all = any((a, "*") in lists for a in addr.values() if a)
        sup = [int(on_all or any((addr[k], ch) in lists for k in OWN[ch] if addr[k])) for ch in CHANNELS]
        out[c.id] = (*ok, *sup)
    return out


def actual(conn: Connection) -> dict[int, tuple[int, ...]]:
    cols = [CUSTOMER.c[f"{kind}_{ch}"] for kind in ("consent", "suppressed") for ch in CHANNELS]
    return {r[0]: tuple(r[1:]) for r in conn.execute(select(CUSTOMER.c.id, *cols))}


def add_customer(conn: Connection, cid: int, email: str | None, phone: str | None) -> None:
    conn.execute(
        insert(CUSTOMER).values(
            id=cid, external_id=f"C{cid}", email=email, phone=phone, created_at=T0, updated_at=T0
        )
    )


def test_reach_follows_every_change(engine):
    steps = [
        ("customers", lambda c: [add_customer(c, 1, "ana@x.fr", "+33611111111"),
                                 add_customer(c, 2, "bob@x.fr", None),
                                 add_customer(c, 3, None, "+33633333333")]),
        ("consents granted", lambda c: [consent.set_consent(c, cid, ch, "granted", "import")
                                        for cid in (1, 2, 3) for ch in CHANNELS]),
        ("devices", lambda c: [c.execute(insert(DEVICE).values(customer_id=1, token="t1", platform="ios")),
                               c.execute(insert(DEVICE).values(customer_id=2, token="t2", platform="android",
                                                               active=False))]),
        ("withdrawn", lambda c: consent.withdraw(c, 1, "sms", "stop")),
        ("suppressed e-mail", lambda c: consent.suppress(c, "bob@x.fr", "unsubscribed", "email")),
        ("new customer with an already suppressed address", lambda c: add_customer(c, 4, "bob@x.fr", None)),
        ("suppressed phone on *", lambda c: consent.suppress(c, "+33633333333", "stop", "*")),
        ("suppressed on push", lambda c: consent.suppress(c, "ana@x.fr", "complaint", "push")),
        ("address changed to a suppressed one", lambda c: c.execute(
            update(CUSTOMER).where(CUSTOMER.c.id == 1).values(email="bob@x.fr"))),
        ("phone emptied", lambda c: c.execute(update(CUSTOMER).where(CUSTOMER.c.id == 1).values(phone=""))),
        ("unsuppressed", lambda c: consent.unsuppress(c, "bob@x.fr", "email")),
        ("device gone", lambda c: consent.deactivate_device(c, "t1")),
        ("device back", lambda c: c.execute(
            update(DEVICE).where(DEVICE.c.token == "t1").values(active=True))),
        ("device deleted", lambda c: c.execute(delete(DEVICE).where(DEVICE.c.token == "t1"))),
        ("suppression list edited", lambda c: c.execute(
            update(SUPPRESSION).where(SUPPRESSION.c.address == "+33633333333").values(channel="push"))),
    ]  # fmt: skip
    seen = {}
    for name, change in steps:
        with engine.begin() as conn:
            change(conn)
        with engine.connect() as conn:
            seen[name] = actual(conn)
            assert seen[name] == expected(conn), name
    # the steps did reach a variety of flags
    assert seen["new customer with an already suppressed address"][4] == (0, 0, 0, 1, 0, 0)
    assert seen["suppression list edited"][2][:3] == (1, 0, 0)
    assert seen["suppression list edited"][3] == (0, 1, 0, 0, 0, 1)

    privacy.forget("C2", engine)
    with engine.begin() as conn:
        assert actual(conn) == expected(conn)
        assert actual(conn)[2] == (0, 0, 0, 0, 0, 0)
        conn.execute(delete(CUSTOMER).where(CUSTOMER.c.id == 3))
    with engine.connect() as conn:
        assert set(actual(conn)) == {1, 2, 4}


def test_reach_is_rolled_back_with_the_change(engine):
    with engine.begin() as conn:
        add_customer(conn, 1, "ana@x.fr", None)
        consent.set_consent(conn, 1, "email", "granted", "import")
    try:
        with engine.begin() as conn:
            consent.suppress(conn, "ana@x.fr", "unsubscribed", "email")
            assert actual(conn)[1] == (1, 0, 0, 1, 0, 0)
            raise RuntimeError("the change fails after the suppression")
    except RuntimeError:
        pass
    with engine.connect() as conn:
        assert actual(conn)[1] == (1, 0, 0, 0, 0, 0)


def test_reach_follows_statements_that_change_many_rows(engine):
    """Imports and operators change many rows per statement (PostgreSQL refreshes per statement)."""
    with engine.begin() as conn:
        for cid in range(1, 6):
            add_customer(conn, cid, f"c{cid}@x.fr", f"+3361000000{cid}")
        conn.execute(
            insert(CONSENT),
            [dict(customer_id=cid, channel=ch, status="granted", updated_at=T0, source="import")
             for cid in range(1, 6) for ch in CHANNELS],
        )  # fmt: skip
        stop = dict(channel="*", address="+33610000003", reason="stop", created_at=T0)
        conn.execute(insert(SUPPRESSION), [stop])
    steps = [
        ("withdrawn for many", update(CONSENT).where(CONSENT.c.channel == "email", CONSENT.c.customer_id > 2)
         .values(status="withdrawn")),
        ("phones changed for many", update(CUSTOMER).where(CUSTOMER.c.id.in_([2, 3, 4])).values(phone=None)),
        ("nothing that matters changed", update(CUSTOMER).values(locale="en_GB")),
        ("consents deleted for many", delete(CONSENT).where(CONSENT.c.channel == "sms",
                                                            CONSENT.c.customer_id < 3)),
        # one statement: a new customer whose phone is already on '*', one whose insert wrote flags itself
        ("new customers, one suppressed, one with written flags", insert(CUSTOMER).values([
            dict(id=6, external_id="C6", email=None, phone="+33610000003", consent_email=0, suppressed_sms=0,
                 created_at=T0, updated_at=T0),
            dict(id=7, external_id="C7", email="c7@x.fr", phone=None, consent_email=1, suppressed_sms=1,
                 created_at=T0, updated_at=T0)])),
    ]  # fmt: skip
    for name, stmt in steps:
        with engine.begin() as conn:
            conn.execute(stmt)
        with engine.connect() as conn:
            assert actual(conn) == expected(conn), name
    with engine.connect() as conn:
        assert [actual(conn)[cid][:2] for cid in range(1, 6)] == [(1, 0), (1, 0), (0, 0), (0, 0), (0, 1)]
        assert actual(conn)[6] == (0, 0, 0, 1, 1, 1)
        assert actual(conn)[7] == (0, 0, 0, 0, 0, 0)


def test_reach_survives_a_downgrade_and_upgrade_of_0010(db_url):
    """0010 moved the flags from customer_reach into customer; both ways keep them and their triggers."""
    engine = get_engine(db_url)
    with engine.begin() as conn:
        add_customer(conn, 1, "ana@x.fr", "+33611111111")
        consent.set_consent(conn, 1, "email", "granted", "import")
        consent.set_consent(conn, 1, "sms", "granted", "import")
    command.downgrade(alembic_config(db_url), "0009")
    with engine.begin() as conn:
        row = "SELECT consent_email, consent_sms, suppressed_sms FROM customer_reach WHERE customer_id = 1"
        assert conn.execute(text(row)).one() == (1, 1, 0)
        consent.suppress(conn, "+33611111111", "stop", "sms")  # 0006's triggers are back
        assert conn.execute(text(row)).one() == (1, 1, 1)
    migrate(db_url)
    with engine.begin() as conn:
        assert actual(conn)[1] == expected(conn)[1] == (1, 1, 0, 0, 1, 0)
        consent.unsuppress(conn, "+33611111111", "sms")
        assert actual(conn)[1] == expected(conn)[1] == (1, 1, 0, 0, 0, 0)
