"""Deliverability alerts: thresholds checked during a run, pausing it when crossed.

A run that keeps sending while hard bounces or complaints climb damages the
sender's reputation for every later campaign, so the dispatcher calls
``pause_if_crossed`` between batches; crossing a threshold pauses that
campaign's run with the reason recorded, which the report and the CLI exit
status show. Rates are judged only past ``alert_min_volume`` sent messages,
so that three bounces in the first twenty messages do not stop a campaign.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, func, select, update

from core.models import CampaignRun, Event, LedgerEntry, Status, utcnow
from core.settings import get_settings

L = LedgerEntry.__table__
E = Event.__table__
R = CampaignRun.__table__


@dataclass(frozen=True)
class Alert:
    name: str
    rate: float
    threshold: float
    count: int
    base: int

    def __str__(self) -> str:
        return (
            f"{self.name} {self.rate:.2%} over the {self.threshold:.2%} threshold "
            f"({self.count} of {self.base})"
        )


def evaluate(sent: int, delivered: int, hard_bounces: int, complaints: int, unsubscribes: int) -> list[Alert]:
    """The thresholds crossed by these counts (none below the minimum volume)."""
    s = get_settings()
    if sent < s.alert_min_volume:
        return []
    checks = [
        ("hard bounces", hard_bounces, sent, s.alert_hard_bounce_rate),
        ("complaints", complaints, delivered, s.alert_complaint_rate),
        ("unsubscribes", unsubscribes, delivered, s.alert_unsubscribe_rate),
    ]
    return [
        Alert(name, count / base, threshold, count, base)
        for name, count, base, threshold in checks
        if base and count / base > threshold
    ]


def run_counts(conn: Connection, run_id: int) -> dict[str, int]:
    """Sent, delivered, hard bounces, complaints and unsubscribes of one run so far."""
    sent_statuses = (
        Status.sent,
        Status.delivered,
        Status.opened,
        Status.clicked,
        Status.converted,
        Status.bounced,
    )
    sent, delivered = conn.execute(
        select(
            func.sum(case((L.c.status.in_(sent_statuses), 1), else_=0)),
            func.sum(case((L.c.status.in_(sent_statuses[1:5]), 1), else_=0)),
        ).where(L.c.run_id == run_id, L.c.in_control == False)  # noqa: E712
    ).one()
    events = dict(
        conn.execute(
            select(E.c.type, func.count(func.distinct(E.c.ledger_id)))
            .where(
                E.c.run_id == run_id,
                E.c.type.in_(["complained", "unsubscribed", "bounced"]),
                ~and_(E.c.type == "bounced", E.c.subtype == "soft"),
            )
            .group_by(E.c.type)
        ).all()
    )
    bounced_status = conn.execute(
        select(func.count()).where(L.c.run_id == run_id, L.c.status == Status.bounced)
    ).scalar_one()
    return {
        "sent": int(sent or 0),
        "delivered": int(delivered or 0),
        "hard_bounces": max(int(events.get("bounced", 0)), int(bounced_status)),
        "complaints": int(events.get("complained", 0)),
        "unsubscribes": int(events.get("unsubscribed", 0)),
    }


def pause_if_crossed(conn: Connection, run_id: int) -> list[Alert]:
    """Check one run; if a threshold is crossed, pause it with the reason. Returns the alerts."""
    alerts = evaluate(**run_counts(conn, run_id))
    if alerts:
        reason = "paused by alert: " + "; ".join(str(a) for a in alerts)
        conn.execute(
            update(R)
            .where(R.c.id == run_id, R.c.status != "paused")
            .values(status="paused", paused_reason=reason, finished_at=utcnow())
        )
    return alerts


def is_paused(conn: Connection, run_id: int) -> bool:
    return conn.execute(select(R.c.status).where(R.c.id == run_id)).scalar_one() == "paused"


def describe_alerts(runs, totals) -> list[str]:
    """Alerts to show in a report: runs paused, and thresholds crossed by the totals."""
    shown = [f"run {r.key}: {r.paused_reason}" for r in runs if r.status == "paused" and r.paused_reason]
    crossed = evaluate(
        totals.sent, totals.delivered, totals.bounced_hard, totals.complained, totals.unsubscribed
    )
    shown += [str(a) for a in crossed if not any(a.name in s for s in shown)]
    return shown
