"""`relance import suppressions`: addresses never to contact (a previous tool's unsubscribes, bounces...).

Rows go to the suppression list with the semantics of ``audiences.consent.suppress``
(idempotent); when the reason is one that withdraws consent, the customers who
hold that address get their consent on the channel withdrawn, with history.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from audiences import normalize as norm
from audiences.consent import WITHDRAWING_REASONS
from audiences.csv_import.common import SeenKeys, dialect_insert, drop_duplicates, in_chunks
from audiences.csv_import.customers import write_consents
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Columns, Row
from core.models import CHANNELS, Consent, Customer, Suppression, utcnow

COLUMNS = Columns(required=("address",), optional=("channel", "reason", "source"))
REASONS = ("unsubscribed", "hard_bounce", "complaint", "stop", "invalid", "erased", "imported")
SOURCE = "suppression-import"


@dataclass(slots=True)
class SuppressionRow:
    line: int
    address: str
    channel: str
    reason: str
    source: str | None

    @property
    def key(self) -> str:
        return f"{self.channel} {self.address}"


def validate(header: list[str], ctx: dict, chunk: list[Row]) -> tuple[list[SuppressionRow], list[tuple]]:
    index = {name: i for i, name in enumerate(header)}
    good, bad = [], []
    for line, cells in chunk:
        raw = cells[index["address"]].strip() if len(cells) > index["address"] else ""
        if len(cells) != len(header):
            bad.append((line, raw, f"{len(cells)} cells but the header has {len(header)} columns"))
            continue
        try:
            channel = (
                norm.channel(cells[index["channel"]], "channel", allow_all=True)
                if "channel" in index
                else None
            )
            reason = cells[index["reason"]].strip().lower() if "reason" in index else ""
            reason = reason or "imported"
            if reason not in REASONS:
                raise norm.Invalid(f"reason {reason!r} is not one of {', '.join(REASONS)}")
            if not raw:
                raise norm.Invalid("address is empty")
            if raw.lower().startswith("sha256:"):  # an erasure list from another system
                address, default_channel = raw.lower(), "*"
            elif "@" in raw:
                address, default_channel = norm.email(raw), "email"
            else:
                address, default_channel = norm.phone(raw), "sms"
            source = norm.text(cells[index["source"]], "source", 64) if "source" in index else None
        except norm.Invalid as exc:
            bad.append((line, raw, str(exc)))
            continue
        good.append(SuppressionRow(line, address, channel or default_channel, reason, source or SOURCE))
    return good, bad


class Writer:
    def __init__(self, conn: Connection, header: list[str], ctx: dict, report: ImportReport, source: str):
        self.conn = conn
        self.report = report
        self.seen = SeenKeys(conn)
        table = Suppression.__table__
        self.insert = (
            dialect_insert(conn, table)
            .on_conflict_do_nothing(index_elements=["channel", "address"])
            .returning(table.c.channel, table.c.address)
        )

    def write(self, rows: list[SuppressionRow]) -> None:
        rows = drop_duplicates(rows, lambda r: r.key, self.seen, self.report, "address")
        if not rows:
            return
        now = utcnow()
        new = list(
            self.conn.execute(
                self.insert,
                [
                    {
                        "channel": r.channel,
                        "address": r.address,
                        "reason": r.reason,
                        "source": r.source,
                        "created_at": now,
                    }
                    for r in rows
                ],
            )
        )
        self.report.inserted += len(new)
        self.report.unchanged += len(rows) - len(new)
        self._withdraw(
            [r for r in rows if r.reason in WITHDRAWING_REASONS and not r.address.startswith("sha256:")]
        )

    def _withdraw(self, rows: list[SuppressionRow]) -> None:
        """Customers holding a suppressed address lose consent on that channel (or all for '*')."""
        if not rows:
            return
        c = Customer.__table__
        owners: dict[str, list[int]] = {}
        for column in (c.c.email, c.c.phone):
            for part in in_chunks(list({r.address for r in rows})):
                for cid, address in self.conn.execute(select(c.c.id, column).where(column.in_(part))):
                    owners.setdefault(address, []).append(cid)
        if not owners:
            return
        t = Consent.__table__
        cids = sorted({cid for ids in owners.values() for cid in ids})
        current = {}
        for part in in_chunks(cids):
            stmt = select(t.c.customer_id, t.c.channel, t.c.status).where(t.c.customer_id.in_(part))
            current.update({(cid, ch): s for cid, ch, s in self.conn.execute(stmt)})
        changes, now, done = [], utcnow(), set()
        for r in rows:
            for cid in owners.get(r.address, ()):
                for ch in CHANNELS if r.channel == "*" else (r.channel,):
                    if current.get((cid, ch)) == "granted" and (cid, ch) not in done:
                        done.add((cid, ch))
                        changes.append(
                            {
                                "customer_id": cid,
                                "channel": ch,
                                "status": "withdrawn",
                                "at": now,
                                "source": SOURCE,
                                "proof": f"{r.reason} (suppression list line {r.line})",
                            }
                        )
        if changes:
            write_consents(self.conn, changes)
            self.report.touched_customers += len({c["customer_id"] for c in changes})
