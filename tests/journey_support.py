"""A journey file, its templates and a consenting base in tmp_path, for the journey tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from core.models import JourneyEntry, JourneyStepLog, LedgerEntry
from core.spec_loader import load_campaign
from journeys.definition import JourneyFile
from tests.test_run_support import write_campaign

PARIS = ZoneInfo("Europe/Paris")
ENTRY = JourneyEntry.__table__
HISTORY = JourneyStepLog.__table__
LEDGER = LedgerEntry.__table__

THREE_STEPS = """\
name: {name}
control_group:
  percent: {control}
channels:
  strategy: first_available
  order: [email, sms]
offer:
  code: MERCI10
{extra}
steps:
  - name: offer-email
    send:
      message: t/hello
      channels: {{strategy: first_available, order: [email]}}
  - name: three-days
    wait: {{days: 3}}
  - name: opened
    branch:
      if: {{step: offer-email, response: opened}}
      then: thanks
      else: sms-reminder
  - name: sms-reminder
    send:
      message: t/hello
      channels: {{strategy: first_available, order: [sms]}}
    next: done
  - name: thanks
    exit: opened-the-offer
  - name: done
    exit: reminded
"""


SMS_FIRST = """\
name: {name}
control_group:
  percent: {control}
offer:
  code: MERCI10
{extra}
steps:
  - name: reminder
    send:
      message: t/hello
      channels: {{strategy: first_available, order: [sms]}}
  - name: a-day
    wait: {{days: 1}}
  - name: follow-up
    send:
      message: t/hello
      channels: {{strategy: first_available, order: [email]}}
"""


def at(text: str) -> datetime:
    """A Paris wall-clock time, e.g. at('2026-11-23 10:00') (a Monday)."""
    return datetime.fromisoformat(text).replace(tzinfo=PARIS)


def write_journey(
    tmp_path: Path, body: str = THREE_STEPS, name: str = "relance-panier", control: float = 0, extra: str = ""
) -> JourneyFile:
    """campaigns/<name>.yaml (and the t/hello template) in tmp_path; the loaded journey."""
    write_campaign(tmp_path, name="unused", control=0)  # templates/t/hello
    (tmp_path / "campaigns" / "unused.yaml").unlink()
    path = tmp_path / "campaigns" / f"{name}.yaml"
    path.write_text(body.format(name=name, control=control, extra=extra), encoding="utf-8")
    return JourneyFile(str(path), load_campaign(path))


def entries(engine, journey: str = "relance-panier") -> dict[int, dict]:
    """customer id -> its (latest) entry row."""
    with engine.connect() as conn:
        rows = conn.execute(select(ENTRY).where(ENTRY.c.journey == journey).order_by(ENTRY.c.id)).mappings()
        return {r["customer_id"]: dict(r) for r in rows}


def messages(engine, step: str | None = None) -> list[dict]:
    with engine.connect() as conn:
        q = select(LEDGER).where(LEDGER.c.step.is_not(None))  # control rows (held_out) have no step
        if step:
            q = q.where(LEDGER.c.step == step)
        return [dict(r) for r in conn.execute(q.order_by(LEDGER.c.id)).mappings()]


def history_counts(engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(HISTORY.c.step, HISTORY.c.outcome, func.count()).group_by(
                HISTORY.c.step, HISTORY.c.outcome
            )
        )
        return {(s, o): n for s, o, n in rows}
