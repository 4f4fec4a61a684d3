"""Helpers shared by the import kinds: dialect upserts, driver-level SQL, keys already seen in this file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite

SEEN_TABLE = "relance_import_seen"
STAGE_TABLE = "relance_import_keys"


def dialect_insert(conn: Connection, table):
    """INSERT with ON CONFLICT for SQLite and PostgreSQL alike."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def stored(value, dialect: str):
    """A date or aware datetime in the form the driver stores and returns for ``dialect``.

    Why: on SQLite, SQLAlchemy (and SQLModel's UTCDateTime) store dates as ISO text and
    datetimes as naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``; producing that text in the
    validation workers lets the writer compare it with what the raw driver reads back and
    send it as is (no per-row type processing, and strings pickle far faster than datetimes).
    PostgreSQL's driver takes and returns the Python objects themselves.
    """
    if value is None or dialect != "sqlite":
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value.isoformat()


class Driver:
    """Raw DBAPI access on a SQLAlchemy connection, inside its current transaction.

    Why: the importer's hot statements run once per chunk with tens of thousands of
    rows; SQLAlchemy's per-row parameter and result processing would cost as much as
    the database work. The SQL is plain and portable (ON CONFLICT and ``excluded``
    exist in both SQLite and PostgreSQL); only the placeholder differs.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.mark = "?" if self.dialect == "sqlite" else "%s"

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def cursor(self):
        return self.conn.connection.driver_connection.cursor()

    def many(self, sql: str, rows: Sequence[tuple]) -> None:
        if rows:
            cur = self.cursor()
            cur.executemany(sql.replace("?", self.mark), rows)
            cur.close()

    def all(self, sql: str, params: tuple = ()) -> list[tuple]:
        cur = self.cursor()
        cur.execute(sql.replace("?", self.mark), params)
        rows = cur.fetchall()
        cur.close()
        return rows

    def run(self, sql: str, params: tuple = ()) -> None:
        cur = self.cursor()
        cur.execute(sql.replace("?", self.mark), params)
        cur.close()


class StagedKeys:
    """The keys of the chunk being written, in a temporary table that lookups join on.

    Why: looking up 20,000 keys through IN lists means rendering and binding 20,000
    parameters per query, several times per chunk; one executemany into this table
    and plain joins are cheaper, on both databases. It also finds keys met in an
    earlier chunk (duplicates in the file) through a second temporary table, so the
    memory does not grow with the file (a set of a million ids would cost ~70 MB).
    """

    def __init__(self, conn: Connection) -> None:
        self.db = Driver(conn)
        with conn.begin():
            for table in (STAGE_TABLE, SEEN_TABLE):
                self.db.run(f"DROP TABLE IF EXISTS {table}")
                self.db.run(f"CREATE TEMPORARY TABLE {table} (key VARCHAR(512) PRIMARY KEY, line INTEGER)")

    def stage(self, items: Sequence[tuple[str, int]]) -> dict[str, int]:
        """Load the chunk's (key, line) pairs (unique keys); return those seen in an earlier chunk."""
        self.db.run(f"DELETE FROM {STAGE_TABLE}")
        self.db.many(f"INSERT INTO {STAGE_TABLE} (key, line) VALUES (?, ?)", items)
        earlier = dict(
            self.db.all(f"SELECT s.key, s.line FROM {STAGE_TABLE} k JOIN {SEEN_TABLE} s ON s.key = k.key")
        )
        if earlier:
            self.db.many(f"DELETE FROM {STAGE_TABLE} WHERE key = ?", [(k,) for k in earlier])
        self.db.run(f"INSERT INTO {SEEN_TABLE} (key, line) SELECT key, line FROM {STAGE_TABLE}")
        return earlier

    def drop(self) -> None:
        with self.db.conn.begin():
            for table in (STAGE_TABLE, SEEN_TABLE):
                self.db.run(f"DROP TABLE IF EXISTS {table}")


def drop_staged_duplicates(records: list, key, staged: StagedKeys, report, label: str) -> list:
    """Keep the first occurrence of each key in the file; reject later ones with both line numbers.

    The kept records' keys are left in the staging table for the caller's joins.
    """
    first_in_chunk: dict[str, int] = {}
    later: list = []
    kept = []
    for rec in records:
        k = key(rec)
        if k in first_in_chunk:
            later.append(rec)
        else:
            first_in_chunk[k] = rec.line
            kept.append(rec)
    earlier = staged.stage(list(first_in_chunk.items()))
    out = []
    for rec in kept + later:
        k = key(rec)
        first = earlier.get(k) or (first_in_chunk[k] if rec.line != first_in_chunk[k] else None)
        if first is None:
            out.append(rec)
        else:
            report.reject(rec.line, k, f"duplicate {label} {k!r}: already on line {first}, which is kept")
    return out


def _sqlite_value(value, cache: dict):
    """What SQLAlchemy's SQLite DateTime/Date types would store (UTC, no offset)."""
    if value is None:
        return None
    out = cache.get(value)
    if out is None:
        if isinstance(value, datetime):
            out = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        else:
            out = value.isoformat()
        cache[value] = out
    return out


def executemany(conn: Connection, stmt, rows: Sequence[dict]) -> None:
    """Run a Core statement once per row through the driver's executemany.

    Why: SQLAlchemy's per-row parameter processing costs ~20 us a row, as much as
    the insert itself; the statement is compiled once by SQLAlchemy (so the SQL is
    still dialect-correct) and the values, converted here for SQLite, go straight
    to the driver. Datetimes must be aware (they are stored in UTC).
    """
    if not rows:
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(rows[0]))
    if not compiled.positional:
        conn.exec_driver_sql(str(compiled), list(rows))
        return
    order = list(compiled.positiontup)
    params = [tuple(r[k] for k in order) for r in rows]
    if conn.dialect.name == "sqlite":
        temporal = [i for i, k in enumerate(order) if _is_temporal(rows, k)]
        if temporal:
            cache: dict = {}
            converted = []
            for p in params:
                p = list(p)
                for i in temporal:
                    p[i] = _sqlite_value(p[i], cache)
                converted.append(tuple(p))
            params = converted
    conn.exec_driver_sql(str(compiled), params)


def _is_temporal(rows: Sequence[dict], key: str) -> bool:
    """Whether a column holds dates (judged on its first non-empty value)."""
    for r in rows:
        if r[key] is not None:
            return isinstance(r[key], date)
    return False


def in_chunks(values: Sequence, size: int = 5000) -> Iterable[Sequence]:
    """Slices small enough for an IN (...) list on SQLite (at most 32766 parameters)."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


class SeenKeys:
    """Keys met earlier in the same file, in a temporary table: duplicates are found in bounded memory.

    A Python set of a million ids would cost ~70 MB; the temporary table lives on
    disk (SQLite temp store) or in the server (PostgreSQL) and goes with the connection.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        with conn.begin():
            conn.execute(text(f"DROP TABLE IF EXISTS {SEEN_TABLE}"))
            conn.execute(
                text(f"CREATE TEMPORARY TABLE {SEEN_TABLE} (key VARCHAR(254) PRIMARY KEY, line INTEGER)")
            )

    def first_lines(self, keys: Sequence[str]) -> dict[str, int]:
        """Of ``keys``, those seen in an earlier chunk, with the line where they were first met."""
        found: dict[str, int] = {}
        sql = text(f"SELECT key, line FROM {SEEN_TABLE} WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        for part in in_chunks(list(keys)):
            found.update({k: line for k, line in self.conn.execute(sql, {"keys": list(part)})})
        return found

    def add(self, items: Sequence[tuple[str, int]]) -> None:
        if items:
            executemany(
                self.conn,
                text(f"INSERT INTO {SEEN_TABLE} (key, line) VALUES (:k, :l)"),
                [{"k": k, "l": line} for k, line in items],
            )

    def drop(self) -> None:
        with self.conn.begin():
            self.conn.execute(text(f"DROP TABLE IF EXISTS {SEEN_TABLE}"))


def drop_duplicates(records: list, key, seen: SeenKeys, report, label: str) -> list:
    """Keep the first occurrence of each key in the file; reject later ones with both line numbers."""
    first_in_chunk: dict[str, int] = {}
    kept = []
    earlier = seen.first_lines(list({key(r) for r in records}))
    for rec in records:
        k = key(rec)
        first = earlier.get(k) or first_in_chunk.get(k)
        if first is not None:
            report.reject(rec.line, k, f"duplicate {label} {k!r}: already on line {first}, which is kept")
            continue
        first_in_chunk[k] = rec.line
        kept.append(rec)
    seen.add(list(first_in_chunk.items()))
    return kept
