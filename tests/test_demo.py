"""`relance demo` (what `make demo` runs) end to end in a fresh directory, as a newcomer would run it."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.prefect
@pytest.mark.xdist_group("demo")
def test_demo_runs_every_sample_campaign_into_the_outbox_and_reports(tmp_path):
    for folder in ("campaigns", "templates"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / "audiences").mkdir()
    shutil.copy(REPO / "audiences" / "segments.yaml", tmp_path / "audiences" / "segments.yaml")
    shutil.copy(REPO / "prefect.yaml", tmp_path / "prefect.yaml")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELANCE_", "PREFECT_API", "PREFECT_HOME"))
    }
    env |= {"PREFECT_HOME": str(tmp_path / ".prefect"), "COLUMNS": "80", "PYTHONPATH": str(REPO)}
    relance = Path(sys.executable).parent / "relance"
    done = subprocess.run(
        [str(relance), "demo", "--customers", "600", "--seed", "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "…" not in done.stdout, "the demo's output was cut at 80 columns (a pipe, a small terminal)"
    assert f"outbox:  {(tmp_path / 'outbox').resolve()}" in done.stdout.replace("\n", "")
    assert f"reports: {(tmp_path / 'reports').resolve()}" in done.stdout.replace("\n", "")

    campaigns = {p.stem for p in (tmp_path / "campaigns").glob("*.yaml")}
    db = sqlite3.connect(tmp_path / "relance.db")
    names = {name for (name,) in db.execute("SELECT DISTINCT campaign FROM campaign_run")}
    assert names == campaigns
    for name in names:
        html = (tmp_path / "reports" / f"{name}.html").read_text()
        assert name in html and "<table" in html and "<svg" in html
        assert (tmp_path / "reports" / f"{name}.csv").read_text().count("\n") > 3

    # what the ledger says was sent is exactly what sits in the outbox
    sent = dict(
        db.execute(
            "SELECT channel, count(*) FROM ledger WHERE provider_message_id IS NOT NULL GROUP BY channel"
        ).fetchall()
    )
    assert sum(sent.values()) > 0
    emails = list((tmp_path / "outbox" / "email").rglob("*.eml"))
    assert len(emails) == sent.get("email", 0)
    for channel in ("sms", "push"):
        path = tmp_path / "outbox" / f"{channel}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        ids = {
            i
            for (i,) in db.execute(
                "SELECT id FROM ledger WHERE channel = ? AND provider_message_id IS NOT NULL", (channel,)
            )
        }
        assert {json.loads(line)["ledger_id"] for line in lines} == ids and len(lines) == len(ids)
    # simulated responses went through the tracking endpoints into the event table
    kinds = {kind for (kind,) in db.execute("SELECT DISTINCT type FROM event")}
    assert {"delivered", "opened", "clicked"} <= kinds
