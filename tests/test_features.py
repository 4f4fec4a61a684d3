"""Customer features computed in SQL, checked against values worked out by hand (SQLite and PostgreSQL)."""

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from audiences.features import refresh
from audiences.importer import import_customers, import_orders
from core.models import Customer, CustomerFeatures

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 4, 9, 10, 0, tzinfo=UTC)


def _features(engine) -> dict[str, dict]:
    f, c = CustomerFeatures.__table__, Customer.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(c.c.external_id, f).join(c, c.c.id == f.c.customer_id)).mappings()
        return {r["external_id"]: dict(r) for r in rows}


def test_features_by_hand(engine):
    import_customers(DATA / "customers.csv", engine)
    import_orders(DATA / "orders.csv", engine)
    result = refresh(engine, full=True, now=NOW)
    assert result.customers == 4
    feats = _features(engine)

    # C001: 50.00 (mode, card) on 2026-01-10, 30.00 (mode, paypal) on 02-10, 20.00 (sport, card) on 03-10
    jeanne = feats["C001"]
    assert jeanne["frequency"] == 3
    assert jeanne["monetary_cents"] == 10_000
    assert jeanne["avg_basket_cents"] == 3_333  # 10000 / 3 rounded
    assert jeanne["recency_days"] == 30  # 2026-03-10 10:00 -> 2026-04-09 10:00
    assert jeanne["tenure_days"] == 1180  # signup 2023-01-15 -> 2026-04-09
    assert jeanne["favourite_category"] == "mode"  # 2 orders against 1
    assert jeanne["preferred_payment_method"] == "card"  # 2 against 1
    assert jeanne["first_order_at"] == datetime(2026, 1, 10, 10, tzinfo=UTC)
    assert jeanne["last_order_at"] == datetime(2026, 3, 10, 10, tzinfo=UTC)

    emile = feats["C002"]  # one order of 100.00 on 2025-11-01, signup 2022-06-01
    assert (emile["frequency"], emile["monetary_cents"], emile["avg_basket_cents"]) == (1, 10_000, 10_000)
    assert (emile["recency_days"], emile["tenure_days"]) == (159, 1408)
    assert (emile["favourite_category"], emile["preferred_payment_method"]) == ("vin", "card")

    zoe = feats["C003"]  # no orders, signup 2024-03-15
    assert (zoe["frequency"], zoe["monetary_cents"], zoe["recency_days"], zoe["tenure_days"]) == (
        0,
        0,
        None,
        755,
    )
    assert zoe["favourite_category"] is None


def test_incremental_refresh_only_recomputes_changed_customers(engine, tmp_path):
    import_customers(DATA / "customers.csv", engine)
    import_orders(DATA / "orders.csv", engine)
    assert refresh(engine, now=NOW).customers == 4  # nobody had features yet
    assert refresh(engine, now=NOW).customers == 0  # nothing changed since

    extra = tmp_path / "more.csv"
    extra.write_text(
        "external_id,customer_external_id,ordered_at,amount,category,payment_method\n"
        "O10,C003,2026-04-01T10:00:00Z,12.00,beaute,apple_pay\n"
        "O11,C003,2026-04-02T10:00:00Z,8.00,beaute,apple_pay\n",
        encoding="utf-8",
    )
    report = import_orders(extra, engine)
    assert report.touched_customers == 1
    assert refresh(engine, now=NOW).customers == 1
    zoe = _features(engine)["C003"]
    assert (zoe["frequency"], zoe["monetary_cents"], zoe["avg_basket_cents"], zoe["recency_days"]) == (
        2,
        2_000,
        1_000,
        7,
    )
    assert (zoe["favourite_category"], zoe["preferred_payment_method"]) == ("beaute", "apple_pay")
    assert import_orders(extra, engine).touched_customers == 0  # the same file again changes nothing
    assert refresh(engine, now=NOW).customers == 0
