"""What happens to stored customer events later: attached to customers imported after them, purged.

Events of customers not in the base yet are kept with a null ``customer_id`` (nothing is lost
when the shop sends events before the nightly customer import); the customer import calls
``attach_unknown`` at the end of each chunk, in the chunk's transaction. ``purge_expired``
applies each type's ``retention_days`` (audiences/events.yaml, built-in types in code).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, text

from audiences.event_types import DEFAULT_RETENTION_DAYS, EventTypes, current
from core.models import CustomerEvent, utcnow


def attach_unknown(conn: Connection, staged_keys: str | None = None) -> int:
    """Give events of then-unknown customers their customer: by external id, then by an e-mail that
    exactly one (not erased) customer has. Returns the events attached.

    ``staged_keys``: a table whose ``key`` column holds the external ids just imported (the customer
    import's staging table), to look only at those customers; None looks at every unknown event.
    """
    if conn.execute(text("SELECT 1 FROM customer_event WHERE customer_id IS NULL LIMIT 1")).first() is None:
        return 0  # the usual case: nothing waits, the import pays one indexed look-up per chunk
    if staged_keys:
        return _attach_staged(conn, staged_keys)
    live = "c.erased_at IS NULL"
    by_ext = conn.execute(
        text(
            "UPDATE customer_event SET customer_id = (SELECT c.id FROM customer c "
            f"WHERE c.external_id = customer_event.external_id AND {live}) "
            "WHERE customer_id IS NULL AND external_id IS NOT NULL AND EXISTS (SELECT 1 FROM customer c "
            f"WHERE c.external_id = customer_event.external_id AND {live})"
        )
    ).rowcount
    by_mail = conn.execute(
        text(
            "UPDATE customer_event SET customer_id = (SELECT min(c.id) FROM customer c "
            f"WHERE c.email = customer_event.email AND {live}) "
            "WHERE customer_id IS NULL AND email IS NOT NULL AND "
            f"(SELECT count(*) FROM customer c WHERE c.email = customer_event.email AND {live}) = 1"
        )
    ).rowcount
    return by_ext + by_mail


def _attach_staged(conn: Connection, staged: str) -> int:
    """``attach_unknown`` for the customers of an import chunk, driven from the chunk's keys.

    Why joins from the staged keys and then updates by id: as one UPDATE, SQLite's planner walked
    every waiting event (``customer_id IS NULL``) for every chunk, and scanned the customer table
    for the e-mail sub-query; from the keys (EXPLAIN QUERY PLAN checked), the cost follows the
    chunk, not the backlog of waiting events.
    """
    # SQLite: CROSS JOIN fixes the join order (keys, then customers, then events): its planner,
    # without statistics, otherwise starts from every waiting event or every live customer.
    join = "CROSS JOIN" if conn.dialect.name == "sqlite" else "JOIN"
    found = conn.execute(
        text(
            f"SELECT e.id, c.id FROM {staged} k {join} customer c ON c.external_id = k.key "
            f"{join} customer_event e ON e.external_id = k.key "
            "WHERE e.customer_id IS NULL AND c.erased_at IS NULL"
        )
    ).all()
    waiting = conn.execute(
        text(
            f"SELECT e.id, c.email FROM {staged} k {join} customer c ON c.external_id = k.key "
            f"{join} customer_event e ON e.email = c.email "
            "WHERE e.customer_id IS NULL AND c.email IS NOT NULL AND c.erased_at IS NULL"
        )
    ).all()
    by_ext = {event_id for event_id, _ in found}
    waiting = [(event_id, email) for event_id, email in waiting if event_id not in by_ext]
    if waiting:
        owners = conn.execute(
            text(
                "SELECT email, min(id), count(*) FROM customer WHERE email IN :emails AND erased_at IS NULL "
                "GROUP BY email"
            ).bindparams(bindparam("emails", expanding=True)),
            {"emails": sorted({email for _, email in waiting})},
        ).all()
        unique = {email: cid for email, cid, n in owners if n == 1}
        found += [(event_id, unique[email]) for event_id, email in waiting if email in unique]
    if found:
        conn.execute(
            text("UPDATE customer_event SET customer_id = :cid WHERE id = :id AND customer_id IS NULL"),
            [{"id": event_id, "cid": cid} for event_id, cid in found],
        )
    return len(found)


def purge_expired(conn: Connection, now: datetime | None = None, types: EventTypes | None = None) -> int:
    """Delete events past their type's retention (types no longer declared: the default retention)."""
    now = now or utcnow()
    types = types or current()
    table = CustomerEvent.__table__
    deleted = 0
    for name, days in types.retention().items():
        stmt = table.delete().where(table.c.type == name, table.c.occurred_at < now - timedelta(days=days))
        deleted += conn.execute(stmt).rowcount
    cutoff = now - timedelta(days=DEFAULT_RETENTION_DAYS)
    others = table.delete().where(table.c.type.not_in(types.names()), table.c.occurred_at < cutoff)
    return deleted + conn.execute(others).rowcount


__all__ = ["attach_unknown", "purge_expired"]
