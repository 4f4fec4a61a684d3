"""`relance import orders`: one row per order, attached to a customer by the customer's external id."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Connection

from audiences import normalize as norm
from audiences.csv_import.common import (
    STAGE_TABLE,
    Driver,
    StagedKeys,
    drop_staged_duplicates,
    in_chunks,
    stored,
)
from audiences.csv_import.customers import invalidate_features
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Columns, Row
from core.models import utcnow

COLUMNS = Columns(
    required=("external_id", "customer_external_id", "ordered_at"),
    optional=("amount", "amount_cents", "currency", "category", "product", "payment_method"),
    one_of=(("amount", "amount_cents"),),
)
FIELDS = ("ordered_at", "amount_cents", "currency", "category", "product", "payment_method")


class OrderRow(NamedTuple):
    line: int
    external_id: str
    customer: str
    values: tuple  # the file's FIELDS, in Writer.cols order after customer_id


def validate(header: list[str], ctx: dict, chunk: list[Row]) -> tuple[list[OrderRow], list[tuple]]:
    index = {name: i for i, name in enumerate(header)}
    width = len(header)
    zone, dialect = ctx["default_timezone"], ctx.get("dialect", "sqlite")
    good, bad = [], []
    for line, cells in chunk:
        key = cells[index["external_id"]].strip() if len(cells) > index["external_id"] else ""
        if len(cells) != width:
            bad.append((line, key, f"{len(cells)} cells but the header has {width} columns (check quotes)"))
            continue
        try:
            if not key or len(key) > 64:
                raise norm.Invalid("external_id is empty or longer than 64 characters")
            customer = cells[index["customer_external_id"]].strip()
            if not customer:
                raise norm.Invalid("customer_external_id is empty")
            at = norm.moment(cells[index["ordered_at"]], "ordered_at", zone)
            if at is None:
                raise norm.Invalid("ordered_at is empty")
            if "amount_cents" in index and cells[index["amount_cents"]].strip():
                amount = norm.integer(cells[index["amount_cents"]], "amount_cents")
            elif "amount" in index and cells[index["amount"]].strip():
                amount = norm.cents(cells[index["amount"]], "amount")
            else:
                raise norm.Invalid("the amount is empty")
            values = [stored(at, dialect), amount]  # stored form, see common.stored
            if "currency" in index:
                values.append(norm.currency(cells[index["currency"]]))
            for col, size in (("category", 64), ("product", 128), ("payment_method", 32)):
                if col in index:
                    v = norm.text(cells[index[col]], col, size)
                    values.append(v.lower() if v and col != "product" else v)
        except norm.Invalid as exc:
            bad.append((line, key, str(exc)))
            continue
        good.append(OrderRow(line, key, customer, tuple(values)))
    return good, bad


class Writer:
    """Writes validated chunks through the raw driver; existing orders are found by joining staged keys."""

    def __init__(self, conn: Connection, header: list[str], ctx: dict, report: ImportReport, source: str):
        self.db = Driver(conn)
        self.report = report
        self.seen = StagedKeys(conn)
        self.cols = ["customer_id"] + [
            c for c in FIELDS if c in ("ordered_at", "amount_cents") or c in header
        ]
        insert_cols = ["external_id", *self.cols] + ([] if "currency" in self.cols else ["currency"])
        updates = ", ".join(f"{c} = excluded.{c}" for c in self.cols)
        self.upsert = (
            f"INSERT INTO orders ({', '.join(insert_cols)}) VALUES ({self.db.marks(len(insert_cols))}) "
            f"ON CONFLICT (external_id) DO UPDATE SET {updates}"
        )  # run only for new or changed rows (compared in Python)
        self.default_currency = () if "currency" in self.cols else ("EUR",)

    def write(self, rows: list[OrderRow]) -> None:
        rows = drop_staged_duplicates(
            rows, lambda r: r.external_id, self.seen, self.report, "order external_id"
        )
        if not rows:
            return
        customers = self._customer_ids(list({r.customer for r in rows}))
        kept = []
        for r in rows:
            if r.customer in customers:
                kept.append(r)
            else:
                self.report.reject(
                    r.line,
                    r.external_id,
                    f"customer {r.customer!r} is not in the customer base: "
                    "import the customer first or fix the id",
                )
        if not kept:
            return
        existing = self._existing_orders()
        writes, touched, inserted, placed = [], set(), 0, []
        for r in kept:
            stored_values = existing.get(r.external_id)
            current = (customers[r.customer], *r.values)
            if stored_values == current:
                continue
            inserted += stored_values is None
            if stored_values is None:
                placed.append(r)
            if stored_values is not None:
                touched.add(stored_values[0])  # an order moved to another customer changes both
            touched.add(current[0])
            writes.append((r.external_id, *current, *self.default_currency))
        self.db.many(self.upsert, writes)
        self._order_placed(placed, customers)
        self.report.inserted += inserted
        self.report.updated += len(writes) - inserted
        self.report.unchanged += len(kept) - len(writes)
        self.report.touched_customers += len(touched)
        invalidate_features(self.db, sorted(touched))

    def _order_placed(self, placed: list[OrderRow], customers: dict[str, int]) -> None:
        """Issue 18: an ``order_placed`` event per new order, in the transaction of the order rows."""
        from audiences import customer_events

        fields = self.cols[1:]
        rows = []
        for r in placed:
            v = dict(zip(fields, r.values, strict=True))
            rows.append(
                (r.external_id, customers[r.customer], r.customer, v["ordered_at"], v["amount_cents"],
                 v.get("currency"), v.get("category"), v.get("product"))
            )  # fmt: skip
        customer_events.orders_placed(self.db, rows, utcnow())

    def _customer_ids(self, keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in in_chunks(keys):
            sql = f"SELECT external_id, id FROM customer WHERE external_id IN ({self.db.marks(len(part))})"
            out.update(self.db.all(sql, tuple(part)))
        return out

    def _existing_orders(self) -> dict[str, tuple]:
        """Orders of the chunk already stored: external_id -> stored values of Writer.cols."""
        cols = "".join(f", o.{c}" for c in self.cols)
        rows = self.db.all(
            f"SELECT o.external_id{cols} FROM {STAGE_TABLE} k JOIN orders o ON o.external_id = k.key"
        )
        return {row[0]: tuple(row[1:]) for row in rows}


__all__ = ["COLUMNS", "OrderRow", "Writer", "validate"]
