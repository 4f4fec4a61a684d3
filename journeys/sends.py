"""A journey's send step: ledger rows for the due entries, and what happens to those that cannot get one.

The due entries of a send step are selected exactly as a campaign's audience
(audiences.selection.candidates restricted to them): consent, suppression,
frequency caps, priority, windows, channel strategy and variants. Then, in
the same transaction:

* selected: ledger rows (INSERT ... SELECT, ``entry_id`` and ``step`` set) in a
  new run of the journey, and the entries move on (history ``sent``);
* only the window is closed (quiet hours, sending window, French SMS hours):
  the entry waits on the step until the next allowed moment in its zone;
* held back by a frequency cap or a higher-priority campaign: tried again every
  hour, for at most ``max_delay_hours`` since the entry reached the step, then
  ``skipped`` (the entry goes on);
* no consented, unsuppressed channel: ``skipped`` at once.

Sending the ledger rows is delivery's job (journeys.tick): the same batches,
claims, outcomes and exactly-once rules as a campaign run.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, literal, select, update

from audiences.selection import candidates, selection_from
from core.settings import get_settings
from delivery import ledger
from journeys import moments
from journeys.conditions import ENTRY
from journeys.definition import send_campaign, step_channels

NO_CHANNEL = "no consented, unsuppressed channel among {channels}"
HELD_BACK = "held back by a frequency cap or a higher-priority campaign for {hours} h"


def run_key(journey: str, step: str, now: Any) -> str:
    """A new run per step per tick; the random tail keeps two ticks at the same clock apart (tests, plans)."""
    return f"{journey}:{step}:{now:%Y-%m-%dT%H:%M}:{secrets.token_hex(3)}"


def act_send(mover: Any, step: Any) -> None:
    """Record the messages of the step's due entries and move, defer or skip each entry (one pass)."""
    conn, now, name = mover.conn, mover.now, step.name
    camp = send_campaign(mover.journey, step)
    due_ids = select(ENTRY.c.customer_id).where(mover.due(name))
    cand = candidates(camp, now, bind=conn, among=due_ids, segments=mover.segments)
    customer = cand.flag("customer_id")

    picked = selection_from(camp, cand).subquery("picked")
    rows = select(
        picked.c.customer_id,
        picked.c.channel,
        picked.c.variant,
        picked.c.message,
        picked.c.in_control,
        ENTRY.c.id.label("entry_id"),
        literal(name).label("step"),
    ).select_from(picked.join(ENTRY, and_(ENTRY.c.customer_id == picked.c.customer_id, mover.due(name))))
    run_id = ledger.start_run(conn, mover.name, run_key(mover.name, name, now))
    conn.execute(update(ledger.RUNS).where(ledger.RUNS.c.id == run_id).values(step=name))
    recorded = ledger.record_selection(conn, run_id, mover.name, rows, get_settings().batch_size)
    if recorded:
        got = select(ledger.LEDGER.c.entry_id).where(ledger.LEDGER.c.run_id == run_id)
        mover.move(
            and_(mover.due(name), ENTRY.c.id.in_(got)),
            name,
            "send",
            "sent",
            mover.next_of(name),
            run_id=run_id,
        )
        mover.result.run_ids.append(run_id)
    else:
        conn.execute(delete(ledger.RUNS).where(ledger.RUNS.c.id == run_id))

    channels = step_channels(mover.journey, step)
    window_only = select(customer).where(
        cand.any_ok("frequency_cap"), ~cand.any_ok("window"), cand.flag("blocked") == 0
    )
    if mover.any_due(and_(mover.due(name), ENTRY.c.customer_id.in_(window_only))):
        policy = cand.policy
        until = moments.per_zone(
            mover.zones, mover.customer_zone(), lambda z: moments.next_allowed(policy, channels, now, z)
        )
        mover.defer(and_(mover.due(name), ENTRY.c.customer_id.in_(window_only)), until, name)

    reachable = select(customer).where(cand.any_ok("suppression"))
    held = and_(mover.due(name), ENTRY.c.customer_id.in_(reachable))
    limit = literal(now - timedelta(hours=step.send.max_delay_hours), moments.MOMENT)
    retry = literal(now + moments.RETRY_EVERY, moments.MOMENT)
    mover.defer(and_(held, ENTRY.c.since > limit), retry, name)
    hours = step.send.max_delay_hours
    mover.move(held, name, "send", "skipped", mover.next_of(name), detail=HELD_BACK.format(hours=hours))
    detail = NO_CHANNEL.format(channels=", ".join(channels))
    mover.move(mover.due(name), name, "send", "skipped", mover.next_of(name), detail=detail)
