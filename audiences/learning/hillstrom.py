"""Adapter: Kevin Hillstrom's public e-mail experiment (64,000 customers) as one past relance campaign run.

Why an adapter rather than helper A's CSV importer: the file holds no
addresses to normalize or consents to record, and its essence (a randomized
send with a control group and its outcomes) lives in the ledger and events,
which have no importer. Rows go through relance's own tables, so the uplift
model is trained by the same dataset and training code as production.

Mapping (one row -> one customer):
- ``recency`` (months since the last purchase) -> an order ``recency * 30.4`` days before the send;
- ``history`` (dollars in the past year) -> that order's amount; ``mens`` and ``womens`` -> its
  category, split into two orders a month apart (half the amount each) when both are 1;
- ``newbie`` -> signup 6 months before the send, else 2 years before;
- ``segment``: Mens / Womens E-Mail -> a sent e-mail (ledger status sent or better), No E-Mail -> a
  control row (``in_control``, status held_out);
- ``visit`` -> a clicked event on the sent e-mail; ``conversion`` + ``spend`` -> a converted event
  with revenue, for both arms (control conversions are what tracking records with subtype control).
  A control customer's visit cannot be a click on a message never sent: it is recorded only when
  ``control_visits=True`` (as a control-subtype click), for a bench comparing "visit" uplift.

``zip_code`` and ``channel`` (purchase channel) have no relance column and are not used.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert

from core.models import CampaignRun, Customer, Event, LedgerEntry, Order

CHUNK = 20_000
TREATED = ("Mens E-Mail", "Womens E-Mail")
CONTROL = "No E-Mail"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load(engine: Engine, path: Path | str, *, sent_at: datetime, control_visits: bool = False) -> int:
    """Write the experiment as customers, orders, one run, ledger rows and events; returns the run id."""
    rows = _rows(Path(path))
    customers, orders, ledger, events = [], [], [], []
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(CampaignRun.__table__).values(
                key=f"hillstrom:{sent_at:%Y-%m-%d}", campaign="hillstrom", status="completed",
                created_at=sent_at, started_at=sent_at, finished_at=sent_at,
            )
        ).inserted_primary_key[0]  # fmt: skip
        first = (conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM customer").scalar() or 0) + 1
        first_ledger = (conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM ledger").scalar() or 0) + 1
    for i, r in enumerate(rows):
        cid, lid = first + i, first_ledger + i
        signup: date = (sent_at - timedelta(days=182 if r["newbie"] == "1" else 730)).date()
        customers.append(
            {"id": cid, "external_id": f"hillstrom-{i + 1}", "signup_date": signup, "created_at": sent_at,
             "updated_at": sent_at}
        )  # fmt: skip
        last = sent_at - timedelta(days=30.4 * int(r["recency"]))
        cents = round(float(r["history"]) * 100)
        cats = [c for c in ("mens", "womens") if r[c] == "1"] or ["other"]
        for k, cat in enumerate(cats):
            orders.append(
                {"external_id": f"hillstrom-{i + 1}-{k}", "customer_id": cid,
                 "ordered_at": last - timedelta(days=30 * k), "amount_cents": cents // len(cats),
                 "category": cat}
            )  # fmt: skip
        control = r["segment"] == CONTROL
        visit, conversion = r["visit"] == "1", r["conversion"] == "1"
        status = "held_out" if control else "converted" if conversion else "clicked" if visit else "sent"
        ledger.append(
            {"id": lid, "run_id": run_id, "campaign": "hillstrom", "customer_id": cid, "channel": "email",
             "variant": r["segment"], "in_control": control, "status": status, "created_at": sent_at,
             "updated_at": sent_at, "sent_at": None if control else sent_at}
        )  # fmt: skip
        sub = "control" if control else None
        if visit and (not control or control_visits):
            events.append(_event(lid, cid, run_id, "clicked", sent_at + timedelta(days=1), sub, None))
        if conversion:
            spend = round(float(r["spend"]) * 100)
            events.append(_event(lid, cid, run_id, "converted", sent_at + timedelta(days=3), sub, spend))
    with engine.begin() as conn:
        for table, data in ((Customer, customers), (Order, orders), (LedgerEntry, ledger), (Event, events)):
            for k in range(0, len(data), CHUNK):
                conn.execute(insert(table.__table__), data[k : k + CHUNK])
    return run_id


def _event(
    lid: int, cid: int, run_id: int, kind: str, at: datetime, subtype: str | None, revenue: int | None
):
    return {
        "ledger_id": lid, "customer_id": cid, "run_id": run_id, "type": kind, "subtype": subtype,
        "provider": "hillstrom", "provider_event_id": f"{kind}-{lid}", "occurred_at": at, "received_at": at,
        "machine": False, "revenue_cents": revenue,
    }  # fmt: skip
