"""Journey report: every per-step figure, exits, time to convert and uplift against plain Python.

The data is hand-made as the engine writes it (notes/17-design.md): entries (control ones held
out at entry), step history, one run per send step with ledger rows tied to entry and step,
events, and orders before, inside and after each entry's conversion window.
"""

from __future__ import annotations

import csv
import os
import random
import statistics
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import insert

from core.models import (
    CampaignRun,
    Customer,
    Event,
    JourneyEntry,
    JourneyStepLog,
    LedgerEntry,
    Order,
    Status,
)
from reporting.journey_render import print_journey_report, write_csv, write_html
from reporting.journey_report import build_journey_report
from reporting.stats import uplift

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
JOURNEY = "winback-journey"
WINDOW = 7
STEPS = [
    ("offer-email", "send"),
    ("three-days", "wait"),
    ("opened", "branch"),
    ("better-offer", "send"),
    ("sms-reminder", "send"),
    ("done", "exit"),
]
SEND_STATUSES = [
    Status.sent,
    Status.delivered,
    Status.opened,
    Status.clicked,
    Status.converted,
    Status.bounced,
]
SKIP_REASONS = ["no consented channel", "capped for 72 h"]
RESPONDED = (Status.opened, Status.clicked, Status.converted)

JOURNEY_YAML = """\
name: {name}
schedule: {{cron: "0 9 * * *"}}
control_group: {{percent: 25}}
conversion: {{window_days: 7}}
steps:
  - name: offer-email
    send: {{message: winback/offer-15, channels: {{order: [email]}}}}
  - name: three-days
    wait: {{days: 3}}
  - name: opened
    branch:
      if: {{step: offer-email, response: opened}}
      then: better-offer
      else: sms-reminder
  - name: better-offer
    send: {{message: winback/offer-15}}
    next: done
  - name: sms-reminder
    send: {{message: winback/offer-15, channels: {{order: [sms]}}}}
  - name: done
    exit: completed
"""


class Journey:
    """Rows for the tables, and the truth (plain Python) they were built from."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.rows: dict[str, list[dict]] = {
            k: [] for k in ("customer", "entry", "step", "ledger", "event", "order")
        }
        self.entries: list[dict] = []  # truth per entry
        self.passes: list[dict] = []  # truth per (entry, send step): statuses of its rows, skipped...
        self.runs = {name: i + 1 for i, (name, kind) in enumerate(STEPS) if kind == "send"}
        for i in range(1, n + 1):
            self._customer(i)

    def _history(self, entry: dict, step: str, kind: str, outcome: str, detail: str | None = None) -> None:
        entry["moves"] += 1
        run_id = self.runs.get(step) if kind == "send" and outcome == "sent" else None
        self.rows["step"].append(
            {
                "id": len(self.rows["step"]) + 1,
                "entry_id": entry["id"],
                "move": entry["moves"],
                "journey": JOURNEY,
                "step": step,
                "kind": kind,
                "outcome": outcome,
                "detail": detail,
                "run_id": run_id,
                "at": entry["entered_at"] + timedelta(hours=entry["moves"]),
            }
        )
        entry["history"].append((step, kind, outcome, detail))

    def _send(self, entry: dict, step: str, channels: list[str]) -> dict | None:
        """A send step: skipped (with a reason) or ledger rows whose statuses are drawn."""
        p = {"entry": entry["id"], "step": step, "statuses": [], "unsubscribed": False, "skipped": None}
        self.passes.append(p)
        if self.rng.random() < 0.1:
            p["skipped"] = self.rng.choice(SKIP_REASONS)
            self._history(entry, step, "send", "skipped", p["skipped"])
            return p
        self._history(entry, step, "send", "sent")
        for channel in channels:
            status = self.rng.choices([*SEND_STATUSES, Status.failed], [2, 3, 2, 2, 1, 1, 1])[0]
            lid = len(self.rows["ledger"]) + 1
            self.rows["ledger"].append(
                {
                    "id": lid,
                    "run_id": self.runs[step],
                    "campaign": JOURNEY,
                    "customer_id": entry["customer_id"],
                    "channel": channel,
                    "status": status,
                    "reason": "provider refused" if status == Status.failed else None,
                    "cost_units": 2.0 if channel == "sms" else None,
                    "entry_id": entry["id"],
                    "step": step,
                    "sent_at": entry["entered_at"],
                }
            )
            p["statuses"].append((channel, status))
            if status in (Status.delivered, *RESPONDED) and self.rng.random() < 0.08:
                p["unsubscribed"] = True
                self.rows["event"].append(
                    {
                        "ledger_id": lid,
                        "customer_id": entry["customer_id"],
                        "run_id": self.runs[step],
                        "type": "unsubscribed",
                        "provider": "test",
                        "provider_event_id": f"u{lid}",
                        "occurred_at": entry["entered_at"],
                    }
                )
        return p

    def _customer(self, i: int) -> None:
        rng = self.rng
        self.rows["customer"].append({"id": i, "external_id": f"j{i}"})
        entry = {
            "id": i,
            "customer_id": i,
            "in_control": rng.random() < 0.25,
            "entered_at": T0 + timedelta(hours=rng.randint(0, 48), minutes=rng.randint(0, 59)),
            "moves": 0,
            "history": [],
        }
        entry["status"], entry["step"], entry["exit_reason"] = self._walk(entry)
        self.entries.append(entry)
        self.rows["entry"].append(
            {
                "id": i,
                "journey": JOURNEY,
                "customer_id": i,
                "entry_key": f"{JOURNEY}:2026-11-02",
                "step": entry["step"],
                "status": entry["status"],
                "due_at": entry["entered_at"] + timedelta(days=3) if entry["status"] == "active" else None,
                "since": entry["entered_at"],
                "moves": entry["moves"],
                "in_control": entry["in_control"],
                "exit_reason": entry["exit_reason"],
                "entered_at": entry["entered_at"],
                "updated_at": entry["entered_at"],
            }
        )
        self._orders(entry)

    def _walk(self, entry: dict) -> tuple[str, str, str | None]:
        """The entry's path through the steps: (status, step, exit reason)."""
        rng = self.rng
        if entry["in_control"]:
            return "control", "offer-email", None
        first = self._send(entry, "offer-email", ["email", "push"] if rng.random() < 0.15 else ["email"])
        if rng.random() < 0.1:
            self._history(entry, "three-days", "journey", "converted")
            return "exited", "three-days", "converted"
        if rng.random() < 0.15:
            return "active", "three-days", None
        self._history(entry, "three-days", "wait", "waited")
        responded = any(s in RESPONDED for _, s in first["statuses"])
        self._history(entry, "opened", "branch", "then" if responded else "else")
        nxt = "better-offer" if responded else "sms-reminder"
        if rng.random() < 0.1:
            return "active", nxt, None
        if rng.random() < 0.05:
            self._history(entry, nxt, "journey", "consent withdrawn")
            return "exited", nxt, "consent withdrawn"
        self._send(entry, nxt, ["email"] if responded else ["sms"])
        self._history(entry, "done", "exit", "completed")
        return "completed", "done", "completed"

    def _orders(self, entry: dict) -> None:
        """Orders before entry, in the window (more likely when treated), at its end, after it."""
        rng, start = self.rng, entry["entered_at"]
        offsets = []
        if rng.random() < 0.3:
            offsets.append(-timedelta(hours=rng.randint(1, 200)))  # before entering: never counts
        if rng.random() < (0.12 if entry["in_control"] else 0.22):
            offsets.append(timedelta(minutes=rng.randint(0, WINDOW * 24 * 60 - 1)))
            if rng.random() < 0.3:
                offsets.append(timedelta(minutes=rng.randint(0, WINDOW * 24 * 60 - 1)))
        if rng.random() < 0.05:
            offsets.append(timedelta(days=WINDOW))  # exactly at the window's end: out
        if rng.random() < 0.03:
            offsets.append(timedelta(0))  # at the very instant of entering: in
        for offset in offsets:
            self.rows["order"].append(
                {
                    "id": len(self.rows["order"]) + 1,
                    "external_id": f"o{len(self.rows['order']) + 1}",
                    "customer_id": entry["customer_id"],
                    "ordered_at": start + offset,
                    "amount_cents": rng.randint(1000, 12000),
                }
            )

    def insert(self, conn) -> None:
        conn.execute(insert(Customer.__table__), self.rows["customer"])
        conn.execute(
            insert(CampaignRun.__table__),
            [
                {
                    "id": run_id,
                    "key": f"{JOURNEY}:{step}:2026-11-02T09:00",
                    "campaign": JOURNEY,
                    "status": "completed",
                    "step": step,
                    "created_at": T0,
                }
                for step, run_id in self.runs.items()
            ],
        )
        conn.execute(insert(JourneyEntry.__table__), self.rows["entry"])
        conn.execute(insert(JourneyStepLog.__table__), self.rows["step"])
        conn.execute(insert(LedgerEntry.__table__), self.rows["ledger"])
        if self.rows["event"]:
            conn.execute(insert(Event.__table__), self.rows["event"])
        conn.execute(insert(Order.__table__), self.rows["order"])


def make_journey(conn, n: int = 500, seed: int = 17) -> Journey:
    journey = Journey(n, seed)
    journey.insert(conn)
    return journey


# ---------------------------------------------------------------- the truth, in plain Python


def expected_step(j: Journey, step: str) -> dict:
    history = [h for e in j.entries for h in e["history"] if h[0] == step and h[1] != "journey"]
    passes = [p for p in j.passes if p["step"] == step and not p["skipped"]]

    def reached(statuses) -> int:
        return sum(any(s in statuses for _, s in p["statuses"]) for p in passes)

    return {
        "entered": len(history),
        "waiting": sum(e["status"] == "active" and e["step"] == step for e in j.entries),
        "sent": reached((*SEND_STATUSES,)),
        "delivered": reached((Status.delivered, *RESPONDED)),
        "opened": reached(RESPONDED),
        "clicked": reached((Status.clicked, Status.converted)),
        "converted": reached((Status.converted,)),
        "bounced": reached((Status.bounced,)),
        "unsubscribed": sum(p["unsubscribed"] for p in passes),
        "not_sent": sum(all(s == Status.failed for _, s in p["statuses"]) for p in passes),
        "skipped": sum(p["step"] == step and p["skipped"] is not None for p in j.passes),
        "messages": sum(s in SEND_STATUSES for p in passes for _, s in p["statuses"]),
        "outcomes": dict(Counter(h[2] for h in history)),
        "skipped_why": dict(Counter(p["skipped"] for p in j.passes if p["step"] == step and p["skipped"])),
        "exited_here": dict(
            Counter(
                e["exit_reason"]
                for e in j.entries
                if e["step"] == step and e["status"] in ("completed", "exited")
            )
        ),
    }


def window_orders(j: Journey) -> pd.DataFrame:
    """Per entry: its group, first order and revenue within [entered_at, entered_at + window)."""
    entries = pd.DataFrame(j.entries)[["id", "customer_id", "in_control", "entered_at"]]
    orders = pd.DataFrame(j.rows["order"]).drop(columns=["id"])
    both = entries.merge(orders, on="customer_id")
    end = both["entered_at"] + pd.Timedelta(days=WINDOW)
    inside = both[(both["ordered_at"] >= both["entered_at"]) & (both["ordered_at"] < end)]
    per_entry = inside.groupby("id").agg(first=("ordered_at", "min"), revenue=("amount_cents", "sum"))
    return entries.set_index("id").join(per_entry)


# ---------------------------------------------------------------- tests


def test_every_step_figure_matches_the_rows(engine):
    with engine.begin() as conn:
        j = make_journey(conn)
    with engine.connect() as conn:
        report = build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS)

    assert [(s.name, s.kind) for s in report.steps] == STEPS
    for s in report.steps:
        want = expected_step(j, s.name)
        got = {k: getattr(s, k) for k in want}
        assert got == want, s.name
    opened = next(s for s in report.steps if s.name == "opened")
    assert set(opened.outcomes) == {"then", "else"} and opened.outcomes["then"] > 0
    sms = next(s for s in report.steps if s.name == "sms-reminder")
    sms_sent = sum(
        s in SEND_STATUSES for p in j.passes if p["step"] == "sms-reminder" for _, s in p["statuses"]
    )
    assert sms.sms_segments == 2 * sms_sent
    assert sms.cost["sms"] == pytest.approx(round(2 * sms_sent * 0.045, 2))
    assert report.messages == len([r for r in j.rows["ledger"] if r["status"] in SEND_STATUSES])
    failed = sum(r["status"] == Status.failed for r in j.rows["ledger"] if r["step"] == "offer-email")
    assert next(iter(report.steps)).not_sent_why == {"failed: provider refused": failed}


def test_entries_and_exit_reasons(engine):
    with engine.begin() as conn:
        j = make_journey(conn, n=300, seed=3)
    with engine.connect() as conn:
        report = build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS, now=T0 + timedelta(days=10))

    statuses = Counter(e["status"] for e in j.entries)
    assert report.entries == len(j.entries)
    assert report.control == statuses["control"] == sum(e["in_control"] for e in j.entries)
    assert {k: report.by_status[k] for k in statuses} == dict(statuses)
    reasons = Counter(e["exit_reason"] for e in j.entries if e["status"] in ("completed", "exited"))
    assert report.exit_reasons == dict(reasons)
    assert set(reasons) == {"completed", "converted", "consent withdrawn"}
    assert report.open_windows == 0  # entries came in by T0 + 49 h: every 7-day window closed by T0 + 10 days
    with engine.connect() as conn:
        early = build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS, now=T0 + timedelta(days=7, hours=1))
    assert early.open_windows == sum(e["entered_at"] > T0 + timedelta(hours=1) for e in j.entries)


def test_time_to_convert_and_uplift_match_an_independent_computation(engine):
    with engine.begin() as conn:
        j = make_journey(conn, n=800, seed=5)
    with engine.connect() as conn:
        report = build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS)

    per_entry = window_orders(j)
    treated = per_entry[~per_entry["in_control"]]
    control = per_entry[per_entry["in_control"]]
    delays = ((treated["first"] - treated["entered_at"]).dropna().dt.total_seconds() / 3600).sort_values()
    t = report.time_to_convert
    assert t.converters == len(delays) > 20
    assert t.median_hours == pytest.approx(delays.quantile(0.5), abs=1e-3)
    assert t.p75_hours == pytest.approx(delays.quantile(0.75), abs=1e-3)

    def revenue(group: pd.DataFrame) -> list[float]:
        return [float(v) / 100 for v in group["revenue"].fillna(0)]

    rt, rc = revenue(treated), revenue(control)
    xt, xc = int(treated["first"].notna().sum()), int(control["first"].notna().sum())
    u = report.uplift
    assert (u.treated_n, u.treated_conversions, u.control_n, u.control_conversions) == (
        len(treated),
        xt,
        len(control),
        xc,
    )
    assert u.absolute.estimate == pytest.approx(xt / len(treated) - xc / len(control))
    want = uplift(
        len(treated),
        xt,
        len(control),
        xc,
        (sum(rt), sum(v * v for v in rt)),
        (sum(rc), sum(v * v for v in rc)),
    )
    assert u.absolute.low == pytest.approx(want.absolute.low) and u.absolute.high == pytest.approx(
        want.absolute.high
    )
    assert u.p_value == pytest.approx(want.p_value)
    assert u.revenue_per_customer.estimate == pytest.approx(statistics.mean(rt) - statistics.mean(rc))
    assert u.revenue_per_customer.low == pytest.approx(want.revenue_per_customer.low)
    assert report.incremental_revenue == pytest.approx(
        (statistics.mean(rt) - statistics.mean(rc)) * len(treated)
    )
    assert report.treated_revenue_cents == int(treated["revenue"].fillna(0).sum())
    assert report.control_revenue_cents == int(control["revenue"].fillna(0).sum())
    assert u.conclusion  # a sentence, whatever the draw


def test_step_order_without_the_file_follows_the_history(sqlite_engine):
    with sqlite_engine.begin() as conn:
        make_journey(conn, n=200, seed=9)
    with sqlite_engine.connect() as conn:
        report = build_journey_report(conn, JOURNEY)
    names = [s.name for s in report.steps]
    assert names[:3] == ["offer-email", "three-days", "opened"]
    assert set(names) == {name for name, _ in STEPS}
    assert dict((s.name, s.kind) for s in report.steps) == dict(STEPS)
    assert report.window_days == 7
    with sqlite_engine.connect() as conn, pytest.raises(LookupError, match="no entry in journey `nope`"):
        build_journey_report(conn, "nope")


def test_terminal_html_and_csv(sqlite_engine, tmp_path):
    from rich.console import Console

    with sqlite_engine.begin() as conn:
        j = make_journey(conn, n=300, seed=11)
    with sqlite_engine.connect() as conn:
        report = build_journey_report(conn, JOURNEY, WINDOW, steps=STEPS)
    console = Console(record=True, width=80)
    print_journey_report(report, console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for words in ("Steps: results", "What each step did", "left here: consent withdrawn", "Time to convert"):
        assert words in text
    assert "whole journey:" in text

    html = write_html(report, tmp_path / "j.html").read_text()
    for table_id in ('id="entries"', 'id="outcomes"', 'id="exits"', 'id="money"', 'id="uplift"'):
        assert table_id in html
    assert html.count('class="steps"') == 2 and "<svg" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org', "")

    rows = list(csv.reader((write_csv(report, tmp_path / "j.csv")).open(encoding="utf-8")))
    header = rows[0]
    assert header[:4] == ["journey", "step", "kind", "entered"]
    by_step = {r[1]: dict(zip(header, r, strict=True)) for r in rows[1 : 1 + len(STEPS)]}
    assert list(by_step) == [name for name, _ in STEPS]
    want = expected_step(j, "offer-email")
    assert int(by_step["offer-email"]["sent"]) == want["sent"]
    assert (
        int(by_step["opened"]["then"]) + int(by_step["opened"]["else"])
        == expected_step(j, "opened")["entered"]
    )
    uplift_header = next(r for r in rows if r[:2] == ["journey", "uplift"])
    uplift_row = rows[rows.index(uplift_header) + 1]
    assert int(uplift_row[uplift_header.index("treated_n")]) == report.treated


def test_cli_reports_a_journey_at_80_columns(sqlite_engine, settings, tmp_path):
    """`relance report <journey>` as a user runs it: found by its file, whole at 80 columns."""
    from tests.readme_commands import ok

    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "winback-journey.yaml").write_text(JOURNEY_YAML.format(name=JOURNEY), encoding="utf-8")
    (campaigns / "broken.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with sqlite_engine.begin() as conn:
        make_journey(conn, n=200, seed=13)
    with sqlite_engine.connect() as conn:
        alerted = 3 if build_journey_report(conn, JOURNEY).alerts else 0  # as for campaigns: exit 3
    env = {
        **os.environ,
        "COLUMNS": "80",
        "RELANCE_CAMPAIGNS_DIR": str(campaigns),
        "RELANCE_REPORTS_DIR": str(tmp_path / "reports"),
    }
    relance = str(Path(sys.executable).parent / "relance")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([relance, *args], env=env, capture_output=True, text=True, timeout=120)

    out = ok(run("report", JOURNEY), alerted)
    assert "Steps: results" in out and "whole journey:" in out
    assert "sms-reminder" in out and "left here: completed" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert (tmp_path / "reports" / f"{JOURNEY}.html").exists()
    assert (tmp_path / "reports" / f"{JOURNEY}.csv").exists()
    assert "HTML report:" in out and "CSV figures:" in out


def test_cli_journey_without_entries_without_file_and_with_campaign_options(
    sqlite_engine, settings, tmp_path, monkeypatch
):
    """In process (fast): the file alone makes a journey; entries alone too; --run is refused."""
    from typer.testing import CliRunner

    from core.settings import get_settings
    from relance.cli import app

    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "other-journey.yaml").write_text(JOURNEY_YAML.format(name="other-journey"), encoding="utf-8")
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(campaigns))
    get_settings.cache_clear()
    with sqlite_engine.begin() as conn:
        make_journey(conn, n=60, seed=14)
    out = tmp_path / "reports"
    empty = CliRunner().invoke(app, ["report", "other-journey", "--out", str(out)])
    assert empty.exit_code == 0, empty.output  # nobody entered yet: its steps, at zero
    assert "0 entries" in empty.output and "three-days" in empty.output
    assert (out / "other-journey.csv").exists()

    by_entries = CliRunner().invoke(app, ["report", JOURNEY, "--out", str(out)])  # no file: the rows tell
    assert by_entries.exit_code in (0, 3), by_entries.output
    assert "60 entries" in by_entries.output and "Steps: results" in by_entries.output
    refused = CliRunner().invoke(app, ["report", JOURNEY, "--run", "x"])
    assert refused.exit_code == 1 and "is a journey" in refused.output


def test_the_report_reads_what_the_engine_writes(sqlite_engine, settings, tmp_path, monkeypatch):
    """The lead's engine (journeys.tick) fills the tables; the report's figures agree with its history."""
    from sqlalchemy import update

    from core.spec_steps import kind_of
    from journeys.tick import run_journey, tick
    from reporting.journey_report import journey_spec
    from tests.journey_support import LEDGER, at, entries, history_counts, write_journey
    from tests.test_ledger_support import seed_customers
    from tests.test_run_support import seed_features, use_tmp_dirs

    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(sqlite_engine, 120)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path, control=20)
    monday = at("2026-11-23 10:00")
    run_journey(sqlite_engine, jf, monday)
    with sqlite_engine.begin() as conn:  # a few customers opened the e-mail: the branch's `then`
        conn.execute(update(LEDGER).where(LEDGER.c.customer_id.in_(ids[:20])).values(status="opened"))
    tick(sqlite_engine, [jf], monday + timedelta(days=3, minutes=1))

    spec = journey_spec("relance-panier", tmp_path / "campaigns")
    steps = [(s.name, kind_of(s)) for s in spec.steps]
    with sqlite_engine.connect() as conn:
        report = build_journey_report(conn, "relance-panier", spec.conversion.window_days, steps=steps)
    state, history = entries(sqlite_engine), history_counts(sqlite_engine)
    assert report.entries == len(state) and report.control == sum(e["in_control"] for e in state.values())
    assert [(s.name, s.kind) for s in report.steps] == steps
    for s in report.steps:
        done = {o: n for (step, o), n in history.items() if step == s.name}
        assert s.entered == sum(done.values()) and s.outcomes == done, s.name
    offer = report.steps[0]
    treated_opened = [c for c in ids[:20] if not state[c]["in_control"]]
    assert offer.sent == report.treated and offer.opened == len(treated_opened)
    assert report.steps[2].outcomes.get("then", 0) == len(treated_opened)
    assert report.exit_reasons == dict(Counter(e["exit_reason"] for e in state.values() if e["exit_reason"]))
