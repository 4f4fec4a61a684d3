"""`relance import devices`: push tokens, upserted by token and attached to a customer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, or_, select

from audiences import normalize as norm
from audiences.csv_import.common import SeenKeys, dialect_insert, drop_duplicates, in_chunks
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Columns, Row
from core.models import Customer, Device

COLUMNS = Columns(required=("customer_external_id", "token", "platform"), optional=("last_seen_at", "active"))
PLATFORMS = ("ios", "android", "web")


@dataclass(slots=True)
class DeviceRow:
    line: int
    token: str
    customer: str
    values: dict


def validate(header: list[str], ctx: dict, chunk: list[Row]) -> tuple[list[DeviceRow], list[tuple]]:
    index = {name: i for i, name in enumerate(header)}
    good, bad = [], []
    for line, cells in chunk:
        customer = (
            cells[index["customer_external_id"]].strip() if len(cells) > index["customer_external_id"] else ""
        )
        if len(cells) != len(header):
            bad.append((line, customer, f"{len(cells)} cells but the header has {len(header)} columns"))
            continue
        try:
            token = cells[index["token"]].strip()
            if not customer:
                raise norm.Invalid("customer_external_id is empty")
            if not token or len(token) > 512:
                raise norm.Invalid("token is empty or longer than 512 characters")
            platform = cells[index["platform"]].strip().lower()
            if platform not in PLATFORMS:
                raise norm.Invalid(f"platform {platform!r} is not one of {', '.join(PLATFORMS)}")
            values = {"platform": platform}
            if "last_seen_at" in index:
                values["last_seen_at"] = norm.moment(
                    cells[index["last_seen_at"]], "last_seen_at", ctx["default_timezone"]
                )
            if "active" in index:
                values["active"] = norm.consent(cells[index["active"]], "active") != "withdrawn"
        except norm.Invalid as exc:
            bad.append((line, customer, str(exc)))
            continue
        good.append(DeviceRow(line, token, customer, values))
    return good, bad


class Writer:
    def __init__(self, conn: Connection, header: list[str], ctx: dict, report: ImportReport, source: str):
        self.conn = conn
        self.report = report
        self.seen = SeenKeys(conn)
        table = Device.__table__
        self.cols = ["customer_id", "platform"] + [c for c in ("last_seen_at", "active") if c in header]
        ins = dialect_insert(conn, table)
        self.upsert = ins.on_conflict_do_update(
            index_elements=[table.c.token],
            set_={c: ins.excluded[c] for c in self.cols},
            where=or_(*[table.c[c].is_distinct_from(ins.excluded[c]) for c in self.cols]),
        ).returning(table.c.token)

    def write(self, rows: list[DeviceRow]) -> None:
        rows = drop_duplicates(rows, lambda r: r.token, self.seen, self.report, "token")
        if not rows:
            return
        t = Customer.__table__
        ids: dict[str, int] = {}
        for part in in_chunks(list({r.customer for r in rows})):
            ids.update(dict(self.conn.execute(_ids_by_external(t, part)).all()))
        kept = []
        for r in rows:
            if r.customer in ids:
                kept.append(r)
            else:
                self.report.reject(r.line, r.customer, f"customer {r.customer!r} is not in the customer base")
        if not kept:
            return
        d = Device.__table__
        existing = set()
        for part in in_chunks([r.token for r in kept]):
            existing |= set(self.conn.scalars(select(d.c.token).where(d.c.token.in_(part))))
        values = [{"token": r.token, "customer_id": ids[r.customer], "active": True} | r.values for r in kept]
        changed = set(self.conn.scalars(self.upsert, values))
        self.report.inserted += len(changed - existing)
        self.report.updated += len(changed & existing)
        self.report.unchanged += len(kept) - len(changed)


def _ids_by_external(table, keys):
    return select(table.c.external_id, table.c.id).where(table.c.external_id.in_(keys))
