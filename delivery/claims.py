"""Batch claims: which worker sends which batch of a run, and taking over the claims of dead workers.

A claimer on this host is dead when its pid is gone (taken over at once); one on another host
when its claim is older than ``claim_timeout`` seconds. Its rows left ``sending`` become
``unknown`` (delivery.ledger.mark_unknown_after_crash), never sent again blindly.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, update

from core.models import (
    utcnow,
)
from delivery import ledger

log = logging.getLogger(__name__)


BATCHES = ledger.BATCHES


def worker_id(tag: str | None = None) -> str:
    """``host:pid:tag``: the pid lets a worker on the same host see at once that a claimer died."""
    host = socket.gethostname()[:40]
    return f"{host}:{os.getpid()}:{tag or uuid.uuid4().hex[:8]}"


def _claimer_state(claimed_by: str | None) -> str:
    """'dead' or 'alive' when the claim was made on this host (its pid tells), else 'remote'."""
    if not claimed_by:
        return "dead"
    host, _, rest = claimed_by.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname()[:40] or not pid_text.isdigit():
        return "remote"
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"
    return "alive"


def reclaim_stale(conn: Connection, run_id: int, claim_timeout: float) -> list[int]:
    """Release claims of dead workers (their ``sending`` rows become unknown); return the batches freed.

    A claimer on this host is dead when its pid is gone (at once); one on another
    host when its claim is older than ``claim_timeout`` seconds.
    """
    cutoff = utcnow() - timedelta(seconds=claim_timeout)
    claims = conn.execute(
        select(BATCHES.c.batch, BATCHES.c.claimed_by, BATCHES.c.claimed_at).where(
            BATCHES.c.run_id == run_id, BATCHES.c.status == "claimed"
        )
    ).all()
    freed = []
    for batch, claimed_by, claimed_at in claims:
        state = _claimer_state(claimed_by)
        timed_out = claimed_at is None or _aware(claimed_at) < cutoff
        stale = state == "dead" or (state == "remote" and timed_out)
        if not stale:
            continue
        released = conn.execute(
            update(BATCHES)
            .where(
                BATCHES.c.run_id == run_id,
                BATCHES.c.batch == batch,
                BATCHES.c.status == "claimed",
                BATCHES.c.claimed_by == claimed_by,
            )
            .values(status="pending", claimed_by=None, claimed_at=None)
        ).rowcount
        if released:
            lost = ledger.mark_unknown_after_crash(conn, run_id, batch)
            if lost:
                log.warning(
                    "run %s batch %s: %s message(s) in flight when %s died: now unknown",
                    run_id,
                    batch,
                    lost,
                    claimed_by,
                )
            freed.append(batch)
    return freed


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def claim_batch(conn: Connection, run_id: int, me: str, batch: int | None = None) -> int | None:
    """Claim one pending batch of the run (``batch`` if given); return it, or None if none is left.

    A given ``batch`` already claimed by ``me`` is claimed again: that is a retry
    in this worker after an exception (``process_batch`` then turns its rows left
    in ``sending`` into ``unknown``).

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent workers each
    get a different batch without waiting. SQLite: one atomic UPDATE (SQLite
    serializes writers). Does not commit: commit right after to publish the claim.
    """
    where = [BATCHES.c.run_id == run_id, BATCHES.c.status == "pending"]
    now = utcnow()
    if batch is not None:
        where.append(BATCHES.c.batch == batch)
        retaken = conn.execute(
            update(BATCHES)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == batch)
            .where(BATCHES.c.status == "claimed", BATCHES.c.claimed_by == me)
            .values(claimed_at=now)
        ).rowcount
        if retaken:
            return batch
    if conn.dialect.name == "postgresql":
        chosen = conn.execute(
            select(BATCHES.c.batch)
            .where(*where)
            .order_by(BATCHES.c.batch)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if chosen is None:
            return None
        conn.execute(
            update(BATCHES)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == chosen)
            .values(status="claimed", claimed_by=me, claimed_at=now)
        )
        return int(chosen)
    first = select(func.min(BATCHES.c.batch)).where(*where).scalar_subquery()
    chosen = conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.status == "pending", BATCHES.c.batch == first)
        .values(status="claimed", claimed_by=me, claimed_at=now)
        .returning(BATCHES.c.batch)
    ).scalar_one_or_none()
    return None if chosen is None else int(chosen)


def release_batch(conn: Connection, run_id: int, batch: int, me: str) -> None:
    """Give a claimed batch back untouched (the run is pausing)."""
    conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == batch, BATCHES.c.claimed_by == me)
        .values(status="pending", claimed_by=None, claimed_at=None)
    )


def pending_batches(conn: Connection, run_id: int) -> list[int]:
    return list(
        conn.execute(
            select(BATCHES.c.batch)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.status == "pending")
            .order_by(BATCHES.c.batch)
        ).scalars()
    )
