"""Where the customers of a journey are now: per step, due soon, and how they left.

Read from ``journey_entry`` alone with two grouped queries (one over the active
entries by step, one over the others by status and reason), so the status of a
journey with a million entries costs two index scans, not a pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select

from core.models import EntryStatus, JourneyEntry

ENTRY = JourneyEntry.__table__


@dataclass
class StepCount:
    """Active entries on one step: how many, and how many act within an hour / a day (overdue included)."""

    step: str
    active: int = 0
    due_hour: int = 0
    due_day: int = 0


@dataclass
class JourneyStatus:
    journey: str
    steps: list[StepCount] = field(default_factory=list)  # by step name, sorted
    control: int = 0
    completed: dict[str, int] = field(default_factory=dict)  # reason (exit step or `completed`) -> n
    exited: dict[str, int] = field(default_factory=dict)  # exit_reason -> n

    @property
    def active(self) -> int:
        return sum(s.active for s in self.steps)

    @property
    def entered(self) -> int:
        return self.active + self.control + sum(self.completed.values()) + sum(self.exited.values())

    def step(self, name: str) -> StepCount:
        """The counts of ``name`` (zeros when no entry is on it)."""
        return next((s for s in self.steps if s.step == name), StepCount(name))


def _count_if(cond) -> object:  # noqa: ANN001
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def journey_status(conn: Connection, journey: str | None, now: datetime) -> list[JourneyStatus]:
    """The status of ``journey`` (or of every journey with entries), sorted by name."""
    c = ENTRY.c
    where = [c.journey == journey] if journey is not None else []
    active = (
        select(
            c.journey,
            c.step,
            func.count().label("n"),
            _count_if(c.due_at <= now + timedelta(hours=1)).label("hour"),
            _count_if(c.due_at <= now + timedelta(days=1)).label("day"),
        )
        .where(c.status == EntryStatus.active, *where)
        .group_by(c.journey, c.step)
    )
    left = (
        select(c.journey, c.status, c.exit_reason, func.count().label("n"))
        .where(c.status != EntryStatus.active, *where)
        .group_by(c.journey, c.status, c.exit_reason)
    )
    out: dict[str, JourneyStatus] = {}

    def of(name: str) -> JourneyStatus:
        return out.setdefault(name, JourneyStatus(name))

    for name, step, n, hour, day in conn.execute(active):
        of(name).steps.append(StepCount(step, int(n), int(hour), int(day)))
    for name, status, reason, n in conn.execute(left):
        status_of = of(name)
        if status == EntryStatus.control:
            status_of.control += int(n)
            continue
        bucket = status_of.completed if status == EntryStatus.completed else status_of.exited
        key = reason or ("completed" if status == EntryStatus.completed else "unknown")
        bucket[key] = bucket.get(key, 0) + int(n)
    for status_of in out.values():
        status_of.steps.sort(key=lambda s: s.step)
    if journey is not None and journey not in out:
        out[journey] = JourneyStatus(journey)
    return [out[k] for k in sorted(out)]
