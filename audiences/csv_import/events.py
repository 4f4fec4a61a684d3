"""`relance import events`: a backfill of customer events, checked like POST /events.

One row per event: ``event_id``, ``type``, ``occurred_at`` (an offset, or the shop's time zone
like orders), the customer by ``external_id`` and/or ``email``, and ``properties`` as a JSON
object (``{"cart_value": 89.9, "items": 3}``; in a CSV cell the quotes are doubled). Rows are
stored through ``audiences.customer_events.store_events`` (source ``import``), so types and
properties are checked exactly as for the API and a re-run stores nothing twice (``unchanged``).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from sqlalchemy import Connection

from audiences import normalize as norm
from audiences.csv_import.common import StagedKeys, drop_staged_duplicates
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Columns, Row

COLUMNS = Columns(
    required=("event_id", "type", "occurred_at"),
    optional=("external_id", "email", "properties"),
    one_of=(("external_id", "email"),),
)


class EventRow(NamedTuple):
    line: int
    event_id: str
    event: dict  # as POST /events takes it (occurred_at already an aware datetime)


def validate(header: list[str], ctx: dict, chunk: list[Row]) -> tuple[list[EventRow], list[tuple]]:
    """Cells to events; the type and property checks happen when storing (they need the types file)."""
    index = {name: i for i, name in enumerate(header)}
    width = len(header)
    zone = ctx["default_timezone"]
    good, bad = [], []
    for line, cells in chunk:
        key = cells[index["event_id"]].strip() if len(cells) > index["event_id"] else ""
        if len(cells) != width:
            bad.append((line, key, f"{len(cells)} cells but the header has {width} columns (check quotes)"))
            continue
        try:
            if not key:
                raise norm.Invalid("event_id is empty")
            event = {
                "event_id": key,
                "type": cells[index["type"]].strip(),
                "occurred_at": norm.moment(cells[index["occurred_at"]], "occurred_at", zone),
            }
            if event["occurred_at"] is None:
                raise norm.Invalid("occurred_at is empty")
            for col in ("external_id", "email"):
                if col in index and cells[index[col]].strip():
                    event[col] = cells[index[col]].strip()
            if "properties" in index and cells[index["properties"]].strip():
                event["properties"] = _properties(cells[index["properties"]])
        except norm.Invalid as exc:
            bad.append((line, key, str(exc)))
            continue
        good.append(EventRow(line, key, event))
    return good, bad


def _properties(cell: str) -> dict:
    try:
        value = json.loads(cell)
    except ValueError:
        raise norm.Invalid(
            f'properties {cell[:60]!r} is not JSON; write an object such as {{"cart_value": 89.9}}'
        ) from None
    if not isinstance(value, dict):
        raise norm.Invalid('properties must be a JSON object, e.g. {"cart_value": 89.9}')
    return value


class Writer:
    """Stores validated chunks; duplicates inside the file are rejected with both line numbers."""

    def __init__(self, conn: Connection, header: list[str], ctx: dict, report: ImportReport, source: str):
        from audiences.event_types import current

        self.conn = conn
        self.report = report
        self.types = current()  # SpecError (the file's problems) before anything is written
        self.seen = StagedKeys(conn)

    def write(self, rows: list[EventRow]) -> None:
        from audiences.customer_events import ACCEPTED, DUPLICATE, store_events

        rows = drop_staged_duplicates(rows, lambda r: r.event_id, self.seen, self.report, "event_id")
        if not rows:
            return
        verdicts = store_events(self.conn, [r.event for r in rows], types=self.types, source="import")
        for row, verdict in zip(rows, verdicts, strict=True):
            if verdict.outcome == ACCEPTED:
                self.report.inserted += 1
            elif verdict.outcome == DUPLICATE:
                self.report.unchanged += 1
            else:
                self.report.reject(row.line, row.event_id, verdict.why or "refused")


__all__ = ["COLUMNS", "EventRow", "Writer", "validate"]
