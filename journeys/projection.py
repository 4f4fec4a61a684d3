"""Where the customers of a journey are expected to go: past response rates, and the flow through the graph.

``past_rates`` reads the earlier messages of a step's templates (campaigns or
journeys) as the engine's branches read responses (journeys.conditions);
``project`` moves customers from the steps they stand on through splits (their
percents), branches (the rate of their response, or the share of entries
matching their audience rule) and the other steps (all onward). A rate with
fewer than ``MIN_DELIVERED`` delivered messages is unknown, and so is every
step after it: no guessed number is multiplied on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, select

from core.models import EntryStatus, Event, JourneyEntry, LedgerEntry
from core.spec import Campaign, kind_of
from journeys import conditions
from journeys.definition import following, send_campaign, steps_of

ENTRY = JourneyEntry.__table__
LEDGER = LedgerEntry.__table__
EVENTS = Event.__table__
MIN_DELIVERED = 100  # fewer delivered messages of a template: its response rates are "unknown"
SENT = ("sent", "delivered", "opened", "clicked", "converted", "bounced")  # reached a provider
MAX_ROUNDS_PER_STEP = 100  # loops through a branch decay; a loop that does not is "unknown"

# --------------------------------------------------------------------------
# Past response rates
# --------------------------------------------------------------------------


@dataclass
class PastRates:
    """What happened to the earlier messages of some templates: counts per response (treated rows)."""

    messages: tuple[str, ...]
    sent: int = 0
    delivered: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # opened, clicked, converted, bounced, unsubscribed

    def rate(self, response: str) -> float | None:
        """The share of customers showing ``response``; None (unknown) with too little history."""
        if response in ("delivered", "bounced"):
            base, n = self.sent, self.counts.get(response, 0) if response == "bounced" else self.delivered
        else:
            base = self.delivered
            n = self.counts.get(conditions.RESPONDED if response == "no_response" else response, 0)
        if self.delivered < MIN_DELIVERED or not base:
            return None
        share = n / base
        return 1 - share if response == "no_response" else share

    def why(self, response: str) -> str:
        rate = self.rate(response)
        what = ", ".join(self.messages)
        if rate is None:
            return f"unknown: {self.delivered:,} delivered message(s) of {what} so far (< {MIN_DELIVERED})"
        base = "sent" if response in ("delivered", "bounced") else "delivered"
        n = self.sent if base == "sent" else self.delivered
        return f"{response} {rate:.1%} of {n:,} {base} message(s) of {what}"


def past_rates(conn: Connection, messages: list[str]) -> PastRates:
    """Counts of each response over the treated ledger rows of ``messages``, in one grouped pass.

    The responses are read as the engine's branches read them (journeys.conditions):
    ledger statuses for delivered / opened / clicked / converted / bounced, events for unsubscribed.
    """

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    status = LEDGER.c.status
    unsub = exists(
        select(EVENTS.c.id).where(
            EVENTS.c.ledger_id == LEDGER.c.id, EVENTS.c.type.in_(conditions.PROVING_EVENTS["unsubscribed"])
        )
    )
    names = ["delivered", "opened", "clicked", "converted", "bounced"]
    query = select(
        count_if(status.in_(SENT)),
        *[count_if(status.in_(conditions.REACHED[r])) for r in names],
        count_if(and_(status.in_(conditions.REACHED["delivered"]), unsub)),
    ).where(LEDGER.c.message.in_(messages), LEDGER.c.in_control == False)  # noqa: E712
    sent, delivered, *rest = conn.execute(query).one()
    counts = dict(zip([*names[1:], "unsubscribed"], (int(x) for x in rest), strict=True))
    return PastRates(tuple(messages), int(sent), int(delivered), counts)


def branch_share(
    conn: Connection, journey: Campaign, step: Any, now: datetime, segments: Any = None
) -> tuple[float | None, str]:
    """The share of the entries at a branch that take `then`, and where it comes from."""
    test = step.branch.if_
    if test.audience is not None:
        active = and_(ENTRY.c.journey == journey.name, ENTRY.c.status == str(EntryStatus.active))
        matching = conditions.rule_test(test.audience, now, conn, segments=segments)
        n, hit = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((matching, 1), else_=0)), 0)).where(active)
        ).one()
        if not n:
            return None, "unknown: no active entry to test the audience rule on"
        return hit / n, f"audience rule: {hit:,} of the {n:,} active entries match it now"
    messages = sorted(
        {v.message for v in send_campaign(journey, journey.step(test.step)).effective_variants()}
    )
    rates = past_rates(conn, messages)
    return rates.rate(test.response), rates.why(test.response)


def project(
    journey: Campaign, start: dict[str, float], shares: dict[str, float | None]
) -> tuple[dict[str, float], set[str]]:
    """Customers expected to act at each step from ``start`` (entries per step); the unknown steps.

    ``shares`` gives each branch's `then` share (None: unknown). Mass moves one
    step per round; a step reached by an unknown share is unknown, and so is
    everything after it. Mass still moving after the last round (a loop that
    does not decay) makes the steps it is on unknown.
    """
    steps = steps_of(journey)
    follow = following(journey)
    expected: dict[str, float] = defaultdict(float)
    unknown: set[str] = set()
    frontier = {s: m for s, m in start.items() if m > 0}
    tainted: set[str] = set()
    for _ in range(MAX_ROUNDS_PER_STEP * len(steps)):
        if not frontier and not tainted:
            break
        moving: dict[str, float] = defaultdict(float)
        spread: set[str] = set()
        for name in tainted:
            if name not in unknown:
                unknown.add(name)
                spread.update(follow.get(name, []))
        for name, mass in frontier.items():
            expected[name] += mass
            if name in unknown:
                continue
            for target, share in _outflow(journey, name, shares):
                if share is None:
                    spread.add(target)
                else:
                    moving[target] += mass * share
        frontier = {s: m for s, m in moving.items() if m > 1e-9 and s not in unknown}
        tainted = spread - unknown
    else:
        unknown |= set(frontier) | tainted
        for name in list(unknown):  # and everything after them
            _downstream(follow, name, unknown)
    return dict(expected), unknown


def _downstream(follow: dict[str, list[str]], name: str, seen: set[str]) -> None:
    todo = list(follow.get(name, []))
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo += follow.get(s, [])


def _outflow(journey: Campaign, name: str, shares: dict[str, float | None]) -> list[tuple[str, float | None]]:
    step = journey.step(name)
    kind = kind_of(step)
    if kind == "branch":
        p = shares.get(name)
        return [(step.branch.then, p), (step.branch.else_, None if p is None else 1 - p)]
    if kind == "split":
        return [(path.next, path.percent / 100) for path in step.split]
    return [(t, 1.0) for t in following(journey)[name]]


def earliest(journey: Campaign) -> dict[str, str]:
    """When each step acts at the earliest after entering: "entry", "+3d", ">=+3d" (a wait until a clock
    time or weekday may last longer)."""
    steps = steps_of(journey)
    follow = following(journey)
    best: dict[str, tuple[timedelta, bool]] = {}

    def acting(name: str, arrive: timedelta, fuzzy: bool) -> tuple[timedelta, bool]:
        step = journey.step(name)
        if kind_of(step) != "wait":
            return arrive, fuzzy
        wait = step.wait
        return arrive + wait.duration, fuzzy or bool(wait.time or wait.weekdays)

    todo = [(steps[0].name, *acting(steps[0].name, timedelta(0), False))]
    while todo:
        name, at, fuzzy = todo.pop()
        if name in best and best[name][0] <= at:
            continue
        best[name] = (at, fuzzy)
        todo += [(t, *acting(t, at, fuzzy)) for t in follow[name]]
    return {s.name: _when(*best[s.name]) if s.name in best else "never" for s in steps}


def _when(delta: timedelta, fuzzy: bool) -> str:
    if not delta and not fuzzy:
        return "entry"
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"
    return (">=" if fuzzy else "") + "+" + text
