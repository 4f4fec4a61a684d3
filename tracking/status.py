"""Forward-only ledger status changes.

Webhooks arrive late, twice and out of order (a ``delivered`` after the
``opened`` it caused). A status therefore only ever rises in ``RANK``: the
rank condition is in the UPDATE's WHERE clause, so concurrent writers cannot
move a row backwards, and one statement serves one row or a whole batch.

``unknown`` (a crash during the provider call) ranks below ``sent``: any event that proves
the provider got the message moves it forward; ``settle_unknown`` does so with the reason, the
time and the provider's id that a plain ``advance`` would not write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, func, update

from core.models import RANK, LedgerEntry, Status, utcnow

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


def settle_unknown(conn: Connection, settlements: Iterable[Mapping[str, Any]]) -> int:
    """Rows still ``unknown`` take the status an event proves (ledger_id, status, reason, at,
    provider_message_id): ``sent_at`` and the provider's id are filled if missing. Executemany,
    only rows in ``unknown``; returns how many were given. Does not commit."""
    params = [
        {
            "b_id": s["ledger_id"],
            "b_status": str(Status(s["status"])),
            "b_reason": s.get("reason"),
            "b_at": s["at"],
            "b_pmid": s.get("provider_message_id"),
            "b_now": utcnow(),
        }
        for s in settlements
    ]
    if not params:
        return 0
    table = LedgerEntry.__table__
    stmt = (
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.status == str(Status.unknown))
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            sent_at=func.coalesce(table.c.sent_at, bindparam("b_at", type_=table.c.sent_at.type)),
            provider_message_id=func.coalesce(table.c.provider_message_id, bindparam("b_pmid")),
            updated_at=bindparam("b_now", type_=table.c.updated_at.type),
        )
    )
    conn.execute(stmt.execution_options(synchronize_session=False), params)
    return len(params)
