"""Purchases attributed to messages, and the window purchases that measure uplift.

Rules (decided here, tested in tests/test_attribution.py):
- A purchase is attributed to ONE message: the customer's latest qualifying
  touch before it, where "touch" follows the campaign's
  ``conversion.attribution``: ``click`` = a human (non-machine) click,
  ``open`` = a human open or click, ``receive`` = the send itself
  (``sent_at`` of a row that was sent and did not bounce or fail).
- Window: ``touch <= ordered_at < touch + window_days``: inclusive at the
  start (a purchase at the very instant of the click counts), exclusive at
  the end (exactly ``window_days`` later is out). Purchases before the touch
  never count.
- Control group: every held-out row (``in_control`` or ``held_out``) of the
  customer whose window covers the purchase ALSO gets a ``converted`` event
  (ledger status untouched), measured from the row's would-be send time
  (``sent_at``, else the run's ``started_at``, else the row's ``created_at``),
  so that reports can compare conversion rates and measure uplift.
- Treated rows: every treated row (sent or not: skipped and failed rows count,
  as held-out rows do) whose window, measured from the same would-be send
  time, covers the purchase, and that the rule above did NOT credit with it,
  gets a ``purchased`` event (ledger status untouched, revenue carried).
  Why: uplift is an intention-to-treat comparison, "bought within the window
  after the (would-be) send", for both groups. Counting only credited
  purchases for the treated (``click``: a purchase without a click is
  invisible) but every purchase for the control group biased the uplift
  down, and could show a campaign that added sales losing to its control
  group (issue 16). The report reads ``converted`` OR ``purchased`` for
  incrementality; ``converted`` alone stays the attribution's credit (funnel,
  revenue, click -> conversion).
- Why events rather than the report reading ``orders``: purchases posted to
  the conversions API (tracking.app) are attributed as they come and never
  reach the orders table; recording the window purchase here, where the same
  rule already decides the control group's, keeps one definition of the
  window for both groups and leaves the report's two grouped queries over
  ledger and events (1M rows in seconds) as they are.
- Known differences, accepted: a credited purchase counts for the treated even
  when the click that earned it came late enough that the purchase falls after
  the send's window (``touch`` later than the send); bounded by clicks made
  late in the window, small next to the bias removed. And when a touch
  reaches us only after its purchase was attributed (a delayed webhook) and
  the order is attributed again, the row may hold both the window purchase and
  the later credit for one order: its customer still converts once, the
  order's revenue counts twice in the uplift's revenue per customer. A credit
  that was already stored keeps its row (first credit wins), so no window
  purchase is added beside it.
- Idempotent: the attributed conversion's event id is the order id (provider
  ``orders``), a control one is ``<order>:control:<ledger id>``, a treated
  window purchase ``<order>:window:<ledger id>``; running ``attribute`` again,
  or receiving the same order by the conversions API and an import, stores
  nothing twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import Connection, func, or_, select

from core.models import CampaignRun, Event, LedgerEntry, Order, Status
from core.settings import get_settings
from core.spec import Conversion
from tracking.events import NormalizedEvent, store_events

_SENT = (Status.sent, Status.delivered, Status.opened, Status.clicked, Status.converted)
MAX_WINDOW_DAYS = 90  # the spec's upper bound on conversion.window_days


@dataclass(frozen=True)
class Purchase:
    order_id: str
    customer_id: int
    ordered_at: datetime
    amount_cents: int
    currency: str = "EUR"


@dataclass
class AttributionResult:
    orders: int = 0
    attributed: int = 0
    control: int = 0
    window: int = 0  # treated window purchases the rule did not credit (``purchased`` events)
    revenue_cents: int = 0
    attributed_ledger_ids: list[int] | None = None
    control_ledger_ids: list[int] | None = None
    window_ledger_ids: list[int] | None = None


class ConversionSettings:
    """Each campaign's ``conversion:`` block, read from campaigns/*.yaml (defaults if absent)."""

    def __init__(self, campaigns_dir: Path | None = None) -> None:
        self.dir = Path(campaigns_dir or get_settings().campaigns_dir)
        self._cache: dict[str, Conversion] = {}
        self._by_name: dict[str, dict] | None = None

    def _scan(self) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for path in sorted(self.dir.glob("*.y*ml")) if self.dir.is_dir() else []:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                continue  # `relance validate` reports broken files; here the defaults apply
            if isinstance(data, dict):
                found[str(data.get("name") or path.stem)] = data
        return found

    def __call__(self, campaign: str) -> Conversion:
        if campaign not in self._cache:
            if self._by_name is None:
                self._by_name = self._scan()
            block = (self._by_name.get(campaign) or {}).get("conversion") or {}
            try:
                self._cache[campaign] = Conversion.model_validate(block)
            except ValueError:
                self._cache[campaign] = Conversion()
        return self._cache[campaign]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _in_window(touch: datetime, at: datetime, days: int) -> bool:
    return touch <= at < touch + timedelta(days=days)


def attribute_purchases(
    conn: Connection, purchases: list[Purchase], conversions: ConversionSettings | None = None
) -> AttributionResult:
    """Attribute these purchases and store the ``converted`` and ``purchased`` events (see module doc)."""
    result = AttributionResult(
        orders=len(purchases), attributed_ledger_ids=[], control_ledger_ids=[], window_ledger_ids=[]
    )
    if not purchases:
        return result
    conversions = conversions or ConversionSettings()
    ledger, runs, events = LedgerEntry.__table__, CampaignRun.__table__, Event.__table__
    customer_ids = sorted({p.customer_id for p in purchases})
    earliest = min(p.ordered_at for p in purchases) - timedelta(days=MAX_WINDOW_DAYS)
    rows = []
    for start in range(0, len(customer_ids), 500):
        chunk = customer_ids[start : start + 500]
        rows += conn.execute(
            select(
                ledger.c.id,
                ledger.c.campaign,
                ledger.c.customer_id,
                ledger.c.in_control,
                ledger.c.status,
                ledger.c.sent_at,
                func.coalesce(ledger.c.sent_at, runs.c.started_at, ledger.c.created_at).label("ref"),
            )
            .join(runs, runs.c.id == ledger.c.run_id)
            .where(ledger.c.customer_id.in_(chunk), ledger.c.created_at >= earliest)
        ).all()
    touches: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    ids = [r.id for r in rows]
    for start in range(0, len(ids), 500):
        for ledger_id, kind, at in conn.execute(
            select(events.c.ledger_id, events.c.type, events.c.occurred_at).where(
                events.c.ledger_id.in_(ids[start : start + 500]),
                events.c.type.in_(("opened", "clicked")),
                or_(events.c.machine.is_(False), events.c.machine.is_(None)),
            )
        ):
            touches[ledger_id].append((kind, _aware(at)))
    by_customer: dict[int, list] = defaultdict(list)
    for r in rows:
        by_customer[r.customer_id].append(r)
    credited = _credited(conn, sorted({p.order_id for p in purchases}))

    new_events: list[NormalizedEvent] = []
    for p in purchases:
        best: tuple[datetime, int] | None = None
        in_window: list[int] = []  # treated rows whose (would-be) send window covers the purchase
        for r in by_customer.get(p.customer_id, []):
            conv = conversions(r.campaign)
            ref = _aware(r.ref)
            covered = ref is not None and _in_window(ref, p.ordered_at, conv.window_days)
            if r.in_control or r.status == Status.held_out:
                if covered:
                    new_events.append(_event(p, r.id, "control"))
                    result.control_ledger_ids.append(r.id)
                continue
            if covered:
                in_window.append(r.id)
            if conv.attribution == "receive":
                times = [_aware(r.sent_at)] if r.status in _SENT and r.sent_at is not None else []
            else:
                kinds = ("clicked",) if conv.attribution == "click" else ("clicked", "opened")
                times = [at for kind, at in touches.get(r.id, []) if kind in kinds]
            for t in times:
                if _in_window(t, p.ordered_at, conv.window_days) and (best is None or (t, r.id) > best):
                    best = (t, r.id)
        if best is not None:
            new_events.append(_event(p, best[1], None))
            result.attributed_ledger_ids.append(best[1])
        credit = credited.get(p.order_id, best[1] if best else None)
        for ledger_id in in_window:
            if ledger_id != credit:
                new_events.append(_event(p, ledger_id, "window"))
                result.window_ledger_ids.append(ledger_id)
    stored = store_events(conn, new_events)
    for e in stored.new:
        if e.subtype == "control":
            result.control += 1
        elif e.type == "purchased":
            result.window += 1
        else:
            result.attributed += 1
            result.revenue_cents += e.revenue_cents or 0
    return result


def _credited(conn: Connection, order_ids: list[str]) -> dict[str, int]:
    """Order id -> the row an earlier pass credited: the first credit stored wins (its event id is the
    order id), so a window purchase must not land on that row when a late touch moves ``best``."""
    events = Event.__table__
    found: dict[str, int] = {}
    for start in range(0, len(order_ids), 500):
        found.update(
            conn.execute(
                select(events.c.provider_event_id, events.c.ledger_id).where(
                    events.c.provider == "orders",
                    events.c.type == "converted",
                    events.c.provider_event_id.in_(order_ids[start : start + 500]),
                    events.c.ledger_id.is_not(None),
                )
            ).all()
        )
    return found


def _event(p: Purchase, ledger_id: int, kind: str | None) -> NormalizedEvent:
    """``kind``: None (the credited conversion), "control" or "window" (see module doc)."""
    return NormalizedEvent(
        type="purchased" if kind == "window" else "converted",
        subtype=kind,
        provider="orders",
        provider_event_id=f"{p.order_id}:{kind}:{ledger_id}" if kind else p.order_id,
        ledger_id=ledger_id,
        occurred_at=p.ordered_at,
        revenue_cents=p.amount_cents,
        raw={
            "order_id": p.order_id,
            "amount_cents": p.amount_cents,
            "currency": p.currency,
            "ordered_at": p.ordered_at.isoformat(),
        },
    )


def attribute(
    conn: Connection, since: datetime | None = None, chunk: int = 2000, campaigns_dir: Path | None = None
) -> AttributionResult:
    """Attribute imported orders placed at or after ``since`` (default: since the first message).

    Reads orders in chunks by id; call it after an orders import (flows) or via `relance attribute`.
    """
    ledger, orders = LedgerEntry.__table__, Order.__table__
    if since is None:
        since = conn.execute(select(func.min(ledger.c.created_at))).scalar()
        if since is None:
            return AttributionResult(attributed_ledger_ids=[], control_ledger_ids=[], window_ledger_ids=[])
    conversions = ConversionSettings(campaigns_dir)
    total = AttributionResult(attributed_ledger_ids=[], control_ledger_ids=[], window_ledger_ids=[])
    last_id = 0
    while True:
        batch = conn.execute(
            select(
                orders.c.id,
                orders.c.external_id,
                orders.c.customer_id,
                orders.c.ordered_at,
                orders.c.amount_cents,
                orders.c.currency,
            )
            .where(
                orders.c.id > last_id,
                orders.c.ordered_at >= since,
                orders.c.customer_id.in_(select(ledger.c.customer_id)),
            )
            .order_by(orders.c.id)
            .limit(chunk)
        ).all()
        if not batch:
            return total
        last_id = batch[-1].id
        part = attribute_purchases(
            conn,
            [
                Purchase(
                    o.external_id, o.customer_id, _aware(o.ordered_at), o.amount_cents, o.currency or "EUR"
                )
                for o in batch
            ],
            conversions,
        )
        total.orders += part.orders
        total.attributed += part.attributed
        total.control += part.control
        total.window += part.window
        total.revenue_cents += part.revenue_cents
        total.attributed_ledger_ids += part.attributed_ledger_ids
        total.control_ledger_ids += part.control_ledger_ids
        total.window_ledger_ids += part.window_ledger_ids
