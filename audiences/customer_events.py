"""Customer events in: validate and store a batch (the API and the CSV backfill both come here).

The rest of the area is re-exported here for its callers: the built-in events and the daily
derivation (audiences.derived_events), attaching and purging (audiences.event_upkeep).

Every function takes a connection inside the caller's transaction, so an event is stored in
the same transaction as what caused it (an order row) or before the sender is answered (the
tracking server commits, then acknowledges).

Set-based on purpose: a batch costs one query to resolve its customers and one
``INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id``, whatever its size. The
sender's ``event_id`` is unique, so a retried batch (after a timeout, a restart, a kill -9)
stores nothing twice and answers ``duplicate`` for what was already stored. A bad event is
refused on its own, with why; the good ones of its batch are stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from audiences import normalize as norm
from audiences.derived_events import customers_created, derive_daily, order_placed, orders_placed
from audiences.event_types import EventTypes, InvalidEvent, current
from audiences.event_upkeep import attach_unknown, purge_expired
from core.models import CustomerEvent, utcnow

MAX_BATCH = 1000  # events per POST /events
MAX_EVENT_ID = 128
FUTURE_SLACK = timedelta(days=1)  # clocks differ; an event dated beyond now + this is refused
SOURCES = ("api", "import", "relance")

ACCEPTED, DUPLICATE, REFUSED = "accepted", "duplicate", "refused"


@dataclass(frozen=True)
class Verdict:
    """What became of the event at ``index`` of a batch: accepted, duplicate or refused (with why)."""

    index: int
    event_id: str | None
    outcome: str
    why: str | None = None


def summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The answer of POST /events: counts, and each refused event with its index and why."""
    return {
        "accepted": sum(v.outcome == ACCEPTED for v in verdicts),
        "duplicates": sum(v.outcome == DUPLICATE for v in verdicts),
        "refused": [
            {"index": v.index, "event_id": v.event_id, "why": v.why} for v in verdicts if v.outcome == REFUSED
        ],
    }


# --------------------------------------------------------------------------
# Validation (pure)
# --------------------------------------------------------------------------


def _moment(value: Any, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEvent(
                f"occurred_at {value!r} is not a date-time; write 2026-12-04T10:00:00Z"
            ) from None
    else:
        raise InvalidEvent("occurred_at must be an ISO 8601 text, e.g. 2026-12-04T10:00:00Z")
    if moment.tzinfo is None:
        raise InvalidEvent(f"occurred_at {value!r} has no offset; write e.g. 2026-12-04T10:00:00+01:00")
    moment = moment.astimezone(UTC)
    if moment > now + FUTURE_SLACK:
        raise InvalidEvent(f"occurred_at {value!r} is in the future; send the time the event happened")
    return moment


def _text(event: dict, key: str, limit: int) -> str | None:
    value = event.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"`{key}` must be a text")
    value = value.strip()
    if len(value) > limit:
        raise InvalidEvent(f"`{key}` is longer than {limit} characters")
    return value


KEYS = frozenset({"event_id", "type", "occurred_at", "external_id", "email", "properties"})


def validate(event: Any, types: EventTypes, now: datetime, builtin_ok: bool = False) -> dict[str, Any]:
    """The row to store for one event as sent, or InvalidEvent saying what to send instead."""
    if not isinstance(event, dict):
        raise InvalidEvent("an event is an object with event_id, type, occurred_at, external_id or email")
    unknown = sorted(str(k) for k in event if k not in KEYS)
    if unknown:
        raise InvalidEvent(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}"
            " (put the event's own data under `properties`)"
        )
    event_id = _text(event, "event_id", MAX_EVENT_ID)
    if event_id is None:
        raise InvalidEvent("`event_id` is missing: give each event a unique id (retries reuse it)")
    properties = types.check(event.get("type"), event.get("properties"), builtin_ok=builtin_ok)
    external_id = _text(event, "external_id", 64)
    email = _text(event, "email", 254)
    if email is not None:
        try:
            email = norm.email(email)
        except norm.Invalid as exc:
            raise InvalidEvent(str(exc)) from None
    if external_id is None and email is None:
        raise InvalidEvent("give the customer's `external_id` or `email`")
    return {
        "event_id": event_id,
        "type": event["type"],
        "customer_id": None,
        "external_id": external_id,
        "email": email,
        "occurred_at": _moment(event.get("occurred_at"), now),
        "received_at": now,
        "properties": properties or None,
    }


# --------------------------------------------------------------------------
# Storing a batch
# --------------------------------------------------------------------------


COLUMNS = ("event_id", "type", "customer_id", "external_id", "email", "occurred_at", "received_at",
           "properties", "source")  # fmt: skip
_PAGE = 1000  # rows per INSERT statement (9,000 parameters; SQLite binds at most 32,766)


class _Raw:
    """The batch's two statements through the DBAPI cursor, inside the connection's transaction.

    Why not SQLAlchemy Core here: at 5,000 events a second the server's Python time is the
    limit, and Core's per-row parameter processing cost about half of it (bench/events_ingest.py).
    The SQL is portable (ON CONFLICT and RETURNING exist in SQLite >= 3.35 and PostgreSQL);
    only the placeholder and the stored form of datetimes and JSON differ.
    """

    def __init__(self, conn: Connection) -> None:
        self.pg = conn.dialect.name == "postgresql"
        self.cursor = conn.connection.driver_connection.cursor()

    def value(self, column: str, value: Any) -> Any:
        """A parameter as the column stores it: SQLite keeps naive UTC text and JSON text."""
        if value is None:
            return None
        if column == "properties":
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if not self.pg and isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def insert(self, rows: list[dict]) -> set[str]:
        mark = "%s" if self.pg else "?"
        one = "(" + ", ".join([mark] * len(COLUMNS)) + ")"
        sql = (
            f"INSERT INTO customer_event ({', '.join(COLUMNS)}) VALUES {', '.join([one] * len(rows))} "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        self.cursor.execute(sql, [self.value(c, r[c]) for r in rows for c in COLUMNS])
        return {eid for (eid,) in self.cursor.fetchall()}

    def customers(self, ext: list[str], mails: list[str]) -> list[tuple]:
        """(id, external_id, email, erased_at) of the customers with one of these ids or e-mails."""
        mark = "%s" if self.pg else "?"
        where = " OR ".join(
            f"{col} IN ({', '.join([mark] * len(values))})"
            for col, values in (("external_id", ext), ("email", mails))
            if values
        )  # IN lists, not PostgreSQL's = ANY(array): its generic prepared plan was 5x slower here
        self.cursor.execute(
            f"SELECT id, external_id, email, erased_at FROM customer WHERE {where}", [*ext, *mails]
        )
        return self.cursor.fetchall()


def _resolve(conn: Connection, rows: list[dict]) -> dict[str, str]:
    """Fill ``customer_id`` (by external id, else by an e-mail that one customer has); return
    why some rows must be refused (erased customers), by event id. One query for the batch."""
    ext = sorted({r["external_id"] for r in rows if r["external_id"]})
    mails = sorted({r["email"] for r in rows if r["email"]})
    by_ext: dict[str, tuple[int, Any]] = {}
    by_mail: dict[str, list[int]] = {}
    if ext or mails:
        wanted_ext, wanted_mails = set(ext), set(mails)
        for cid, external_id, email, erased_at in _Raw(conn).customers(ext, mails):
            if external_id in wanted_ext:
                by_ext[external_id] = (cid, erased_at)
            if email in wanted_mails and erased_at is None:
                by_mail.setdefault(email, []).append(cid)
    refused: dict[str, str] = {}
    for r in rows:
        hit = by_ext.get(r["external_id"]) if r["external_id"] else None
        if hit is not None and hit[1] is not None:
            refused[r["event_id"]] = (
                f"customer {r['external_id']!r} was erased (relance customers forget): events about them "
                "are not kept"
            )
        elif hit is not None:
            r["customer_id"] = hit[0]
        elif r["email"] and len(by_mail.get(r["email"], ())) == 1:
            r["customer_id"] = by_mail[r["email"]][0]
    return refused


def insert_rows(conn: Connection, rows: list[dict]) -> set[str]:
    """INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING event_id; the event ids actually inserted.

    ``rows`` have every key of ``COLUMNS``, datetimes aware and properties a dict or None.
    """
    raw = _Raw(conn)
    inserted: set[str] = set()
    for start in range(0, len(rows), _PAGE):
        inserted |= raw.insert(rows[start : start + _PAGE])
    return inserted


@dataclass
class Checked:
    """A batch after validation, before the database: verdicts so far and the rows to store."""

    size: int
    verdicts: dict[int, Verdict]
    rows: list[tuple[int, dict]]  # (index in the batch, row), event ids unique


def check_batch(
    events: Sequence[Any],
    types: EventTypes | None = None,
    *,
    source: str = "api",
    builtin_ok: bool = False,
    now: datetime | None = None,
) -> Checked:
    """Validate a batch without touching the database (the server runs it outside its write lock)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    types = types or current()
    now = now or utcnow()
    checked = Checked(len(events), {}, [])
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        try:
            row = validate(event, types, now, builtin_ok)
        except InvalidEvent as exc:
            given = event.get("event_id") if isinstance(event, dict) else None
            checked.verdicts[index] = Verdict(
                index, given if isinstance(given, str) else None, REFUSED, str(exc)
            )
            continue
        if row["event_id"] in first:
            why = f"same event_id as event {first[row['event_id']]} of this batch"
            checked.verdicts[index] = Verdict(index, row["event_id"], DUPLICATE, why)
            continue
        first[row["event_id"]] = index
        row["source"] = source
        checked.rows.append((index, row))
    return checked


def store_checked(conn: Connection, checked: Checked) -> list[Verdict]:
    """Resolve the customers and insert a checked batch; one verdict per event, in order.

    Safe to run again after a failed transaction (the tracking server retries on a locked database).
    """
    rows = checked.rows
    refused = _resolve(conn, [r for _, r in rows])
    inserted = insert_rows(conn, [r for _, r in rows if r["event_id"] not in refused])
    verdicts = dict(checked.verdicts)
    for index, row in rows:
        eid = row["event_id"]
        if eid in refused:
            verdicts[index] = Verdict(index, eid, REFUSED, refused[eid])
        elif eid in inserted:
            verdicts[index] = Verdict(index, eid, ACCEPTED)
        else:
            verdicts[index] = Verdict(index, eid, DUPLICATE, "already stored")
    return [verdicts[i] for i in range(checked.size)]


def store_events(
    conn: Connection,
    events: Sequence[Any],
    *,
    types: EventTypes | None = None,
    source: str = "api",
    builtin_ok: bool = False,
    now: datetime | None = None,
) -> list[Verdict]:
    """Validate and store a batch; one verdict per event, in order (see module doc)."""
    return store_checked(conn, check_batch(events, types, source=source, builtin_ok=builtin_ok, now=now))


def relance_events(conn: Connection, rows: Iterable[dict]) -> int:
    """Store events relance produces itself (built-in types, already valid): rows with event_id, type,
    customer_id, external_id, email, occurred_at (aware), properties. Returns how many were new."""
    now = utcnow()
    full = [
        {"customer_id": None, "external_id": None, "email": None, "properties": None, **r,
         "received_at": now, "source": "relance"}
        for r in rows
    ]  # fmt: skip
    return len(insert_rows(conn, full)) if full else 0


def count(conn: Connection, **where: Any) -> int:
    """Events stored (``type=...``, ``customer_id=...``): for reports, benches and tests."""
    table = CustomerEvent.__table__
    query = select(func.count()).select_from(table)
    for key, value in where.items():
        query = query.where(table.c[key].is_(None) if value is None else table.c[key] == value)
    return conn.execute(query).scalar_one()


__all__ = [
    "MAX_BATCH",
    "Checked",
    "Verdict",
    "attach_unknown",  # audiences.event_upkeep
    "check_batch",
    "count",
    "customers_created",  # audiences.derived_events
    "derive_daily",  # audiences.derived_events
    "order_placed",  # audiences.derived_events
    "orders_placed",  # audiences.derived_events
    "purge_expired",  # audiences.event_upkeep
    "relance_events",
    "store_checked",
    "store_events",
    "summary",
]
