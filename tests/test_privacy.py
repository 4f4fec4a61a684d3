"""Export and erasure of one customer (GDPR), and what a later import does with an erased person."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from audiences import consent
from audiences.importer import import_customers, import_devices, import_orders
from audiences.privacy import UnknownCustomer, export, forget, to_json
from core.models import Consent, ConsentEvent, Customer, Device, Order, Suppression

DATA = Path(__file__).parent / "data"


def _load(engine):
    import_customers(DATA / "customers.csv", engine)
    import_orders(DATA / "orders.csv", engine)
    import_devices(DATA / "devices.csv", engine)


def _score(engine, external_id: str) -> None:
    """A churn score of the customer (the table keys it by a version id; the export names it)."""
    from datetime import UTC, datetime

    from audiences.learning.scoring import insert_scores

    with engine.begin() as conn:
        cid = conn.scalar(select(Customer.id).where(Customer.external_id == external_id))
        insert_scores(conn, "churn", "20260101T000000Z", [(cid, 0.25)], datetime(2026, 1, 1, tzinfo=UTC))


def test_export_holds_everything_about_the_customer(engine):
    _load(engine)
    _score(engine, "C002")
    data = json.loads(to_json(export("C002", engine)))
    assert [(s["model"], s["version"], s["score"]) for s in data["scores"]] == [
        ("churn", "20260101T000000Z", 0.25)
    ]
    assert data["customer"]["email"] == "emile.zola@example.fr"
    assert data["interests"] == ["vin"]
    assert {c["channel"] for c in data["consents"]} == {"email", "sms", "push"}
    assert data["consent_history"][0]["proof"] == "checkout box"
    assert {d["token"] for d in data["devices"]} == {"tok-aaa", "tok-bbb"}
    assert [o["external_id"] for o in data["orders"]] == ["O4"]
    assert set(data) >= {"features", "scores", "recommendations", "messages", "events", "suppressions"}
    with pytest.raises(UnknownCustomer):
        export("nobody", engine)


def test_forget_erases_personal_data_and_keeps_anonymous_aggregates(engine):
    _load(engine)
    _score(engine, "C002")
    done = forget("C002", engine)
    assert done["device"] == 2 and done["customer_interest"] == 1 and done["customer_score"] == 1
    data = export("C002", engine)
    customer = data["customer"]
    for field in ("first_name", "last_name", "email", "phone", "city", "postcode", "birth_year", "gender"):
        assert customer[field] is None, field
    assert customer["erased_at"] is not None
    assert data["devices"] == [] and data["interests"] == []
    assert {c["channel"]: (c["status"], c["source"]) for c in data["consents"]} == {
        ch: ("withdrawn", "forget") for ch in ("email", "sms", "push")
    }
    assert all(e["proof"] is None for e in data["consent_history"])
    assert [o["amount_cents"] for o in data["orders"]] == [10_000]  # anonymous revenue stays
    with engine.connect() as conn:
        addresses = set(conn.scalars(select(Suppression.address).where(Suppression.reason == "erased")))
        assert addresses == {
            consent.address_hash("emile.zola@example.fr"),
            consent.address_hash("+33781234567"),
        }
        assert consent.is_suppressed(conn, "emile.zola@example.fr", "push")
        # no clear-text copy of the address is left anywhere in the customer base
        assert conn.scalar(select(Customer.id).where(Customer.email == "emile.zola@example.fr")) is None
    assert forget("C002", engine)["erased_at"] == done["erased_at"]  # idempotent


def test_reimport_after_forget_does_not_bring_the_person_back_as_consenting(engine, tmp_path):
    _load(engine)
    forget("C002", engine)
    # the same file again: the erased row is not refilled
    report = import_customers(DATA / "customers.csv", engine)
    assert [(p.line, p.key) for p in report.rejected] == [(3, "C002")]
    assert "was erased on" in report.rejected[0].reason
    assert export("C002", engine)["customer"]["email"] is None
    # the same person under a new id: imported, every consent withdrawn, reported
    again = tmp_path / "new-account.csv"
    again.write_text(
        "external_id,email,phone,consent_email,consent_sms\n"
        "NEW1,Emile.Zola@example.fr,07 81 23 45 67,yes,yes\n",
        encoding="utf-8",
    )
    report = import_customers(again, engine)
    assert report.inserted == 1 and report.warnings[0].line == 2
    with engine.connect() as conn:
        rows = conn.execute(
            select(Consent.channel, Consent.status, Consent.source)
            .join(Customer, Customer.id == Consent.customer_id)
            .where(Customer.external_id == "NEW1")
        ).all()
        granted = conn.scalar(
            select(ConsentEvent.id)
            .join(Customer, Customer.id == ConsentEvent.customer_id)
            .where(Customer.external_id == "NEW1", ConsentEvent.status == "granted")
        )
        assert conn.scalar(select(Device.id).join(Customer).where(Customer.external_id == "C002")) is None
        assert conn.scalar(select(Order.id).where(Order.external_id == "O4")) is not None
    assert {(ch, s, src) for ch, s, src in rows} == {
        (ch, "withdrawn", "erased-suppression") for ch in ("email", "sms", "push")
    }
    assert granted is None
