"""Demo data: deterministic for a seed, realistic in shape, and imported through the real importer."""

import hashlib
from datetime import date

import pandas as pd

from audiences.demo_data import generate
from audiences.features import refresh
from audiences.importer import import_customers, import_orders


def _digest(files) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (files.customers, files.orders, files.devices)
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = generate(tmp_path / "a", 2000, seed=3, as_of=date(2026, 11, 1))
    b = generate(tmp_path / "b", 2000, seed=3, as_of=date(2026, 11, 1))
    c = generate(tmp_path / "c", 2000, seed=4, as_of=date(2026, 11, 1))
    assert _digest(a) == _digest(b)
    assert _digest(a)["customers.csv"] != _digest(c)["customers.csv"]


def test_shape_of_the_base(tmp_path):
    files = generate(tmp_path, 5000, seed=1, orders_per_customer=4, as_of=date(2026, 11, 1))
    cust = pd.read_csv(files.customers, dtype=str, keep_default_na=False)
    orders = pd.read_csv(files.orders, dtype=str, keep_default_na=False)
    assert len(cust) == 5000
    assert 3.5 < len(orders) / len(cust) < 4.5
    per_customer = orders.groupby("customer_external_id").size()
    assert per_customer.max() >= 20 and (per_customer == 1).sum() > per_customer.max()  # long tail
    assert (cust["locale"] == "fr_FR").mean() > 0.8 and (cust["locale"] == "en_GB").any()
    assert {"Europe/Paris", "America/Guadeloupe", "Indian/Reunion"} <= set(cust["timezone"])
    last = pd.to_datetime(orders["ordered_at"]).groupby(orders["customer_external_id"]).max()
    lapsed = (pd.Timestamp("2026-11-01", tz="UTC") - last).dt.days > 365
    assert 0.15 < lapsed.mean() < 0.6
    assert set(cust["consent_sms"]) == {"yes", "no", ""}


def test_import_reports_the_planted_invalid_addresses(sqlite_engine, tmp_path):
    files = generate(tmp_path, 3000, seed=5, as_of=date(2026, 11, 1))
    report = import_customers(files.customers, sqlite_engine)
    reasons = [p.reason for p in report.rejected]
    assert reasons and all("email" in r or "phone" in r for r in reasons)
    assert report.inserted == 3000 - len(reasons)
    orders = import_orders(files.orders, sqlite_engine)
    assert all("is not in the customer base" in p.reason for p in orders.rejected)
    assert refresh(sqlite_engine).customers == report.inserted
