"""Unknown outcomes settled by evidence, so that `--resend-unknown` re-sends only what is truly unknown.

Evidence comes from two places:

- providers that keep their own record (the outbox: ``written(ledger_ids)``): a row left unknown
  by a crash is ``sent`` when the provider holds the message, and ``planned`` again when it does
  not (it was never written: sending it now cannot make a duplicate). Done here, when a batch is
  taken over after a crash and before ``--resend-unknown`` requeues anything;
- provider webhooks (SendGrid ``processed``/``delivered``/``bounce``... carry the ``ledger_id``
  custom arg; Twilio status callbacks carry it in their signed URL): tracking.events moves an
  unknown row to what the event proves (tracking.status.reconcile).

Every row settled this way gets a reason starting with ``RECONCILED``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from core.models import LedgerEntry, Status, utcnow
from delivery import ledger

LEDGER = LedgerEntry.__table__
RECONCILED = "reconciled"
FOUND_REASON = f"{RECONCILED}: found in the {{provider}} after a crash"
NOT_WRITTEN_REASON = "never written ({provider} checked after a crash): sent again"


@dataclass
class Settled:
    sent: int = 0  # the provider holds them: sent
    replanned: int = 0  # the provider never got them: planned again

    def __iadd__(self, other: Settled) -> Settled:
        self.sent += other.sent
        self.replanned += other.replanned
        return self


def witness(provider: str | None, channel: str, settings=None) -> Any | None:
    """The provider ``provider`` of ``channel`` if it can say what it wrote (has ``written``), else None."""
    from channels.registry import PROVIDERS

    if provider not in PROVIDERS:
        return None
    module, cls_name, channels = PROVIDERS[provider]
    cls = getattr(import_module(module), cls_name)
    if channel not in channels or not hasattr(cls, "written"):
        return None
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    return cls(channel, settings)


def settle_unknown(conn: Connection, run_id: int, batch: int | None = None, settings=None) -> Settled:
    """Ask the self-witnessing providers about the run's (or batch's) unknown rows; settle them.

    Rows found go to ``sent``; rows not found go back to ``planned`` and, when ``batch`` is None,
    their batches to ``pending`` (with ``batch`` given the caller holds that batch and sends them).
    Does not commit.
    """
    where = [LEDGER.c.run_id == run_id, LEDGER.c.status == str(Status.unknown)]
    if batch is not None:
        where.append(LEDGER.c.batch == batch)
    else:  # a batch claimed now is its claimer's to settle (process_batch does, before loading it)
        claimed = select(ledger.BATCHES.c.batch).where(
            ledger.BATCHES.c.run_id == run_id, ledger.BATCHES.c.status == "claimed"
        )
        where.append(LEDGER.c.batch.not_in(claimed))
    rows = conn.execute(select(LEDGER.c.id, LEDGER.c.channel, LEDGER.c.provider).where(*where)).all()
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        if row.provider:
            groups[(row.channel, row.provider)].append(row.id)
    settled = Settled()
    for (channel, name), ids in groups.items():
        provider = witness(name, channel, settings)
        if provider is None:
            continue
        found = provider.written(ids)
        settled.sent += _mark_found(conn, found, name)
        settled.replanned += _replan(conn, [i for i in ids if i not in found], name)
    if settled.replanned and batch is None:
        ledger.reopen_batches(conn, run_id)
    return settled


def _mark_found(conn: Connection, found: dict[int, str], provider: str) -> int:
    if not found:
        return 0
    now = utcnow()
    conn.execute(
        update(LEDGER)
        .where(LEDGER.c.id == bindparam("b_id"), LEDGER.c.status == str(Status.unknown))
        .values(
            status=str(Status.sent),
            provider_message_id=bindparam("b_pmid"),
            reason=FOUND_REASON.format(provider=provider),
            sent_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
        [{"b_id": i, "b_pmid": pmid} for i, pmid in found.items()],
    )
    return len(found)


def _replan(conn: Connection, ids: list[int], provider: str) -> int:
    """unknown -> planned for messages the provider proves it never got (a sanctioned step back)."""
    moved = 0
    for start in range(0, len(ids), 500):
        moved += conn.execute(
            update(LEDGER)
            .where(LEDGER.c.id.in_(ids[start : start + 500]), LEDGER.c.status == str(Status.unknown))
            .values(
                status=str(Status.planned),
                reason=NOT_WRITTEN_REASON.format(provider=provider),
                updated_at=utcnow(),
            )
        ).rowcount
    return moved


def reconciled_count(conn: Connection, run_id: int) -> int:
    """Rows of the run whose unknown outcome was settled by evidence (outbox files, webhooks)."""
    from sqlalchemy import func

    return conn.execute(
        select(func.count()).where(LEDGER.c.run_id == run_id, LEDGER.c.reason.like(f"{RECONCILED}:%"))
    ).scalar_one()
