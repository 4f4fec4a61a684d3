"""Forward-only ledger status changes.

Webhooks arrive late, twice and out of order (a ``delivered`` after the
``opened`` it caused). A status therefore only ever rises in ``RANK``: the
rank condition is in the UPDATE's WHERE clause, so concurrent writers cannot
move a row backwards, and one statement serves one row or a whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, update

from relance.models import RANK, LedgerEntry, Status, utcnow

_IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit


def lower_statuses(status: Status | str) -> list[str]:
    """Statuses a row may leave for ``status`` (strictly lower rank)."""
    target = RANK[Status(status)]
    return [str(s) for s, rank in RANK.items() if rank < target]


def advance(
    conn: Connection,
    ledger_id: int | Iterable[int],
    status: Status | str,
    reason: str | None = None,
) -> int:
    """Raise the status of one or many ledger rows to ``status``; returns the rows changed.

    Rows already at an equal or higher rank (including ``held_out`` and
    ``skipped``) are left alone. ``reason`` is written only when given.
    Does not commit: the caller's transaction makes it atomic with the event.
    """
    status = Status(status)
    ids = [ledger_id] if isinstance(ledger_id, int) else sorted(set(ledger_id))
    if not ids:
        return 0
    table = LedgerEntry.__table__
    values: dict = {"status": str(status), "updated_at": utcnow()}
    if reason is not None:
        values["reason"] = reason
    changed = 0
    for start in range(0, len(ids), _IN_CHUNK):
        stmt = (
            update(table)
            .where(table.c.id.in_(ids[start : start + _IN_CHUNK]), table.c.status.in_(lower_statuses(status)))
            .values(**values)
        )
        changed += conn.execute(stmt).rowcount
    return changed
