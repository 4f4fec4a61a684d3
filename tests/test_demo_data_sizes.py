"""`relance demo-data` for the small bases a newcomer tries first (a region with no customer drawn)."""

from __future__ import annotations

import csv

import pytest

from audiences.demo_data import generate


@pytest.mark.parametrize("customers", [1, 7, 120, 500])
def test_small_bases_are_generated_whole(tmp_path, customers):
    files = generate(tmp_path, customers, seed=42)
    with files.customers.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == customers == files.counts["customers"]
    assert len({row["external_id"] for row in rows}) == customers
