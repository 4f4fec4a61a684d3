"""`relance journeys status`: counts per step, due soon, control, completed and exited, on both databases."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from typer.testing import CliRunner

from core.models import JourneyEntry
from journeys.status import journey_status
from relance.cli import app
from tests.test_ledger_support import seed_customers
from tests.test_run_support import env_for, use_tmp_dirs

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RELANCE = str(Path(sys.executable).parent / "relance")

JOURNEY = """\
name: j1
steps:
  - name: first-email
    send: {message: t/hello, channels: {order: [email]}}
  - name: wait-a-day
    wait: {days: 1}
  - name: done
    exit: completed
"""

# (journey, step, status, due in (hours from NOW, None: no due), exit_reason), one row per entry
ROWS = [
    *[("j1", "first-email", "active", -1, None)] * 3,  # overdue: due within the hour too
    *[("j1", "first-email", "active", 0.5, None)] * 2,
    ("j1", "wait-a-day", "active", 5, None),
    ("j1", "wait-a-day", "active", 48, None),
    ("j1", "old-step", "active", 2, None),  # a step the file no longer has
    *[("j1", "first-email", "control", None, None)] * 2,
    ("j1", "done", "completed", None, "completed"),
    ("j1", "done", "completed", None, "reminded"),
    *[("j1", "wait-a-day", "exited", None, "converted")] * 2,
    ("j1", "gone", "exited", None, "step removed: gone"),
    ("j2", "only", "active", 30, None),
]


def _insert(engine) -> None:
    ids = seed_customers(engine, len(ROWS))
    rows = [
        {"journey": j, "customer_id": cid, "entry_key": f"{j}:k", "step": step, "status": status,
         "due_at": None if due is None else NOW + timedelta(hours=due), "since": NOW, "moves": 0,
         "in_control": status == "control", "exit_reason": reason, "entered_at": NOW, "updated_at": NOW}
        for cid, (j, step, status, due, reason) in zip(ids, ROWS, strict=True)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(JourneyEntry.__table__), rows)


def test_status_counts_steps_due_and_exits(engine):
    _insert(engine)
    with engine.connect() as conn:
        (j1,) = journey_status(conn, "j1", NOW)
        both = journey_status(conn, None, NOW)
        (none,) = journey_status(conn, "nothing-here", NOW)
    assert [s.journey for s in both] == ["j1", "j2"]
    counts = {s.step: (s.active, s.due_hour, s.due_day) for s in j1.steps}
    assert counts == {"first-email": (5, 5, 5), "wait-a-day": (2, 0, 1), "old-step": (1, 0, 1)}
    assert j1.control == 2
    assert j1.completed == {"completed": 1, "reminded": 1}
    assert j1.exited == {"converted": 2, "step removed: gone": 1}
    assert j1.active == 8 and j1.entered == 15
    assert both[1].step("only").active == 1 and both[1].step("only").due_day == 0  # due in 30 h
    assert none.entered == 0 and none.steps == []


def test_status_command_fits_80_columns_and_flags_removed_steps(db_url, engine, tmp_path, monkeypatch):
    _insert(engine)
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "j1.yaml").write_text(JOURNEY, encoding="utf-8")
    env = {**env_for(tmp_path, db_url), "COLUMNS": "80"}
    done = subprocess.run(
        [RELANCE, "journeys", "status", "--now", NOW.isoformat()],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "…" not in out and "Traceback" not in done.stderr
    assert max(len(line) for line in out.splitlines()) <= 80
    cells = [line.replace("│", " ").split() for line in out.splitlines()]
    rows = {c[0]: c[1:] for c in cells if len(c) == 5}
    assert rows["first-email"] == ["send", "5", "5", "5"]
    assert rows["wait-a-day"] == ["wait", "2", "0", "1"] and rows["done"] == ["exit", "0", "0", "0"]
    # the file's order, then the step the file no longer has, flagged
    order = [c[0] for c in cells if c and c[0] in ("first-email", "wait-a-day", "done", "old-step")]
    assert order == ["first-email", "wait-a-day", "done", "old-step"]
    assert rows["old-step"] == ["removed", "1", "0", "1"]
    assert "steps no longer in the file: old-step" in out
    assert "control group (held out at entry): 2" in out
    assert "converted: 2" in out and "step removed: gone: 1" in out and "reminded: 1" in out
    assert "j2" in out  # entries without a file are listed too

    # the others in-process (a subprocess costs seconds of start-up)
    use_tmp_dirs(monkeypatch, tmp_path)
    args = ["journeys", "status", "j2", "--now", NOW.isoformat()]
    one = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert one.exit_code == 0 and "j1" not in one.output and "only" in one.output
    missing = CliRunner().invoke(app, ["journeys", "status", "nope"])
    assert missing.exit_code == 1 and "no journey named 'nope'" in missing.output
