"""`relance import customers`: profile, interests and consents, upserted by external id.

Validation (``validate``) is pure and runs in worker processes for large files;
writing (``write``) runs in the importing process, one transaction per chunk.
Consents are written in bulk with the semantics of ``audiences.consent.set_consent``
(current state upserted, one history row per change, with its proof): doing it
row by row would cost three statements per customer and channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy import Connection

from audiences import normalize as norm
from audiences.consent import address_hash
from audiences.csv_import.common import (
    STAGE_TABLE,
    Driver,
    StagedKeys,
    drop_staged_duplicates,
    in_chunks,
    stored,
)
from audiences.csv_import.report import ImportReport
from audiences.csv_import.source import Columns, Row
from core.models import CHANNELS, utcnow

PROFILE = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "timezone",
    "country",
    "city",
    "postcode",
    "gender",
    "birth_year",
    "signup_date",
    "preferred_channel",
    "preferred_payment_method",
)
CONSENT_COLUMNS = tuple(f"consent_{c}" for c in CHANNELS)
COLUMNS = Columns(
    required=("external_id",),
    optional=PROFILE + ("interests",) + CONSENT_COLUMNS + ("consent_source", "consent_at", "consent_proof"),
)
ERASED_SOURCE = "erased-suppression"


class CustomerRow(NamedTuple):
    """A valid row: a plain tuple, which worker processes send back cheaply (dataclasses pickle slowly)."""

    line: int
    external_id: str
    profile: tuple  # values of the file's profile columns, in PROFILE order
    interests: tuple[str, ...] | None
    consents: tuple[tuple[str, str], ...]  # (channel, granted/withdrawn), only the non-empty cells
    consent_at: object  # stored form (common.stored): text on SQLite, datetime on PostgreSQL
    consent_source: str | None
    consent_proof: str | None


_TEXT_LIMITS = {
    "first_name": 100,
    "last_name": 100,
    "city": 100,
    "postcode": 16,
    "preferred_payment_method": 32,
}


def _converters(ctx: dict) -> dict[str, Callable[[str, str | None], object]]:
    """One function per profile column, (cell, row's country) -> stored value, built once per chunk.

    Why: a million rows have fourteen million cells; dispatching on the column name
    cell by cell cost more than some of the checks themselves.
    """
    dialect = ctx.get("dialect", "sqlite")
    locale, zone = ctx["default_locale"], ctx["default_timezone"]
    out: dict[str, Callable[[str, str | None], object]] = {
        "email": lambda v, _: norm.email(v) if v.strip() else None,
        "phone": lambda v, country: norm.phone(v, country) if v.strip() else None,
        "locale": lambda v, _: norm.locale(v, locale),
        "timezone": lambda v, _: norm.timezone(v, zone),
        "country": lambda v, _: norm.country(v),
        "gender": lambda v, _: norm.gender(v),
        "birth_year": lambda v, _: norm.year(v),
        "signup_date": lambda v, _: stored(norm.day(v, "signup_date"), dialect),
        "preferred_channel": lambda v, _: norm.channel(v),
    }
    for name, limit in _TEXT_LIMITS.items():
        out[name] = lambda v, _, name=name, limit=limit: norm.text(v, name, limit)
    return out


def validate(header: list[str], ctx: dict, chunk: list[Row]) -> tuple[list[CustomerRow], list[tuple]]:
    """Normalize a chunk of rows; returns the valid rows and (line, key, reason) for the others.

    Dates come back in the database's stored form (see ``common.stored``).
    """
    index = {name: i for i, name in enumerate(header)}
    width = len(header)
    convert = _converters(ctx)
    profile = [(index[c], convert[c]) for c in PROFILE if c in index]
    consent_at = [(ch, index[f"consent_{ch}"]) for ch in CHANNELS if f"consent_{ch}" in index]
    country_i = index.get("country")
    interests_i = index.get("interests")
    at_i, source_i, proof_i = (index.get(c) for c in ("consent_at", "consent_source", "consent_proof"))
    zone, dialect, key_i = ctx["default_timezone"], ctx.get("dialect", "sqlite"), index["external_id"]
    good: list[CustomerRow] = []
    bad: list[tuple] = []
    for line, cells in chunk:
        key = cells[key_i].strip() if len(cells) > key_i else ""
        if len(cells) != width:
            bad.append((line, key, f"{len(cells)} cells but the header has {width} columns (check quotes)"))
            continue
        try:
            if not key:
                raise norm.Invalid("external_id is empty")
            if len(key) > 64:
                raise norm.Invalid("external_id is longer than 64 characters")
            country = norm.country(cells[country_i]) if country_i is not None else None
            values = tuple(fn(cells[i], country) for i, fn in profile)
            interests = tuple(norm.tags(cells[interests_i])) if interests_i is not None else None
            consents = tuple(
                (ch, status) for ch, i in consent_at if (status := norm.consent(cells[i], f"consent_{ch}"))
            )
            at = stored(norm.moment(cells[at_i], "consent_at", zone), dialect) if at_i is not None else None
            source = norm.text(cells[source_i], "consent_source", 32) if source_i is not None else None
            proof = (cells[proof_i].strip() or None) if proof_i is not None else None
        except norm.Invalid as exc:
            bad.append((line, key, str(exc)))
            continue
        good.append(CustomerRow(line, key, values, interests, consents, at, source, proof))
    return good, bad


class Writer:
    """Writes validated chunks; holds the SQL built once per file.

    Every statement goes through the raw driver (``common.Driver``) with values
    already in stored form; existing rows are found by joining the staged keys of
    the chunk, and brand-new customers skip the interest and consent look-ups.
    """

    def __init__(self, conn: Connection, header: list[str], ctx: dict, report: ImportReport, source: str):
        self.db = Driver(conn)
        self.header = header
        self.report = report
        self.source = source  # file name, used as the default consent proof
        self.seen = StagedKeys(conn)
        self.profile_cols = [c for c in PROFILE if c in header]
        self.address_at = [self.profile_cols.index(c) for c in ("email", "phone") if c in self.profile_cols]
        self.defaults = {c: ctx[f"default_{c}"] for c in ("locale", "timezone") if c not in self.profile_cols}
        insert_cols = ["external_id", *self.profile_cols, *self.defaults, "created_at", "updated_at"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*self.profile_cols, "updated_at"))
        conflict = f"DO UPDATE SET {updates}" if self.profile_cols else "DO NOTHING"
        self.upsert = (
            f"INSERT INTO customer ({', '.join(insert_cols)}) VALUES ({self.db.marks(len(insert_cols))}) "
            f"ON CONFLICT (external_id) {conflict}"
        )  # run only for new or changed rows (compared in Python)
        self.join = f"FROM {STAGE_TABLE} k JOIN customer c ON c.external_id = k.key"

    def write(self, rows: list[CustomerRow]) -> None:
        rows = drop_staged_duplicates(rows, lambda r: r.external_id, self.seen, self.report, "external_id")
        if not rows:
            return
        existing = self._existing()
        now = stored(utcnow(), self.db.dialect)
        kept, new, changed = [], [], []
        for r in rows:
            hit = existing.get(r.external_id)
            if hit and hit[1] is not None:
                self.report.reject(
                    r.line,
                    r.external_id,
                    f"customer {r.external_id!r} was erased on {str(hit[1])[:10]} "
                    "(relance customers forget); the row is not imported",
                )
                continue
            kept.append(r)
            if hit is None:
                new.append(r)
            elif hit[2] != r.profile:
                changed.append(r)
        if not kept:
            return
        defaults = tuple(self.defaults.values())
        self.db.many(self.upsert, [(r.external_id, *r.profile, *defaults, now, now) for r in new + changed])
        ids = {ext: v[0] for ext, v in existing.items()}
        if new:
            ids.update(self.db.all(f"SELECT c.external_id, c.id {self.join}"))
        self.report.inserted += len(new)
        self.report.updated += len(changed)
        self.report.unchanged += len(kept) - len(new) - len(changed)
        old = {ids[r.external_id] for r in kept if r.external_id in existing}
        if "interests" in self.header:
            self._interests(kept, ids, old)
        self._consents(kept, ids, old, now)
        self.report.touched_customers += len(new) + len(changed)
        invalidate_features(self.db, [ids[r.external_id] for r in changed])  # new ones have no features
        self._events(new, ids, now)

    def _events(self, new: list[CustomerRow], ids: dict[str, int], now) -> None:
        """Issue 18: ``customer_created`` for new customers; events that waited for these customers
        (sent before they were imported) are attached to them, in the chunk's transaction."""
        from audiences import customer_events

        mail = self.profile_cols.index("email") if "email" in self.profile_cols else None
        created = [
            (ids[r.external_id], r.external_id, None if mail is None else r.profile[mail]) for r in new
        ]
        customer_events.customers_created(self.db, created, now)
        customer_events.attach_unknown(self.db.conn, STAGE_TABLE)

    def _existing(self) -> dict[str, tuple[int, object, tuple]]:
        """external_id -> (id, erased_at, stored values of the file's profile columns), for the chunk."""
        cols = "".join(f", c.{c}" for c in self.profile_cols)
        rows = self.db.all(f"SELECT c.external_id, c.id, c.erased_at{cols} {self.join}")
        return {row[0]: (row[1], row[2], tuple(row[3:])) for row in rows}

    def _interests(self, rows: list[CustomerRow], ids: dict[str, int], old: set[int]) -> None:
        """Replace each customer's tags with the file's, touching only the differences."""
        wanted = {(ids[r.external_id], tag) for r in rows for tag in r.interests or ()}
        current = set()
        if old:
            sql = f"SELECT i.customer_id, i.tag {self.join} JOIN customer_interest i ON i.customer_id = c.id"
            current = {(c, tag) for c, tag in self.db.all(sql) if c in old}
        gone, added = sorted(current - wanted), sorted(wanted - current)
        self.db.many("DELETE FROM customer_interest WHERE customer_id = ? AND tag = ?", gone)
        self.db.many("INSERT INTO customer_interest (customer_id, tag) VALUES (?, ?)", added)

    def _consents(self, rows: list[CustomerRow], ids: dict[str, int], old: set[int], now) -> None:
        erased = self._erased(rows)
        if not erased and not any(r.consents for r in rows):
            return
        current = self._current_consents(old) if old else {}
        changes: list[tuple] = []
        for r in rows:
            cid = ids[r.external_id]
            if erased and erased.intersection(self._hashes(r)):
                # An erased person comes back under a new id: keep the row, never their consent.
                for ch in CHANNELS:
                    if current.get((cid, ch), (None,))[0] != "withdrawn":
                        changes.append((cid, ch, "withdrawn", now, ERASED_SOURCE, None))
                self.report.warn(
                    r.line,
                    r.external_id,
                    "e-mail or phone belongs to an erased customer: imported with every consent withdrawn",
                )
                continue
            for ch, status in r.consents:
                cur = current.get((cid, ch))
                renewed = cur is not None and r.consent_at is not None and r.consent_at > cur[1]
                if cur is None or cur[0] != status or renewed:
                    proof = r.consent_proof or f"{self.source} line {r.line}"
                    at = r.consent_at or now
                    changes.append((cid, ch, status, at, r.consent_source or "import", proof))
        write_consent_rows(self.db, changes)

    def _erased(self, rows: list[CustomerRow]) -> set[str]:
        """Of the chunk's address hashes, those of erased customers (no look-up while nobody was erased)."""
        if not self.db.all("SELECT 1 FROM suppression WHERE reason = 'erased' LIMIT 1"):
            return set()
        hashes = list({h for r in rows for h in self._hashes(r)})
        found: set[str] = set()
        for part in in_chunks(hashes):
            marks = self.db.marks(len(part))
            sql = f"SELECT address FROM suppression WHERE reason = 'erased' AND address IN ({marks})"
            found |= {a for (a,) in self.db.all(sql, tuple(part))}
        return found

    def _hashes(self, row: CustomerRow) -> list[str]:
        """The row's addresses as an erasure keeps them (hashed only when some customer was erased)."""
        return [address_hash(row.profile[i]) for i in self.address_at if row.profile[i]]

    def _current_consents(self, old: set[int]) -> dict[tuple[int, str], tuple[str, object]]:
        """(customer id, channel) -> (status, updated_at) of the chunk's existing customers."""
        rows = self.db.all(
            f"SELECT co.customer_id, co.channel, co.status, co.updated_at {self.join} "
            "JOIN consent co ON co.customer_id = c.id"
        )
        return {(c, ch): (s, at) for c, ch, s, at in rows if c in old}


CONSENT_UPSERT = (
    "INSERT INTO consent (customer_id, channel, status, updated_at, source, proof) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (customer_id, channel) DO UPDATE SET status = excluded.status, "
    "updated_at = excluded.updated_at, source = excluded.source, proof = excluded.proof"
)
CONSENT_EVENT = (
    "INSERT INTO consent_event (customer_id, channel, status, at, source, proof, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def write_consent_rows(db: Driver, changes: list[tuple]) -> None:
    """Bulk ``set_consent``: upsert the current state, append one history row per change.

    ``changes`` are (customer_id, channel, status, at, source, proof) with ``at`` in stored form.
    """
    if changes:
        db.many(CONSENT_UPSERT, changes)
        recorded = stored(utcnow(), db.dialect)
        db.many(CONSENT_EVENT, [(*c, recorded) for c in changes])


def write_consents(conn: Connection, changes: list[dict]) -> None:
    """``write_consent_rows`` for dict changes with aware datetimes (the suppression import)."""
    db = Driver(conn)
    keys = ("customer_id", "channel", "status", "at", "source", "proof")
    rows = [tuple(stored(c[k], db.dialect) if k == "at" else c[k] for k in keys) for c in changes]
    write_consent_rows(db, rows)


def invalidate_features(db: Driver | Connection, customer_ids: list[int]) -> None:
    """Drop the features of changed customers; `features refresh` recomputes every missing row."""
    if not isinstance(db, Driver):
        db = Driver(db)
    db.many("DELETE FROM customer_features WHERE customer_id = ?", [(i,) for i in customer_ids])
