"""README.md's "A campaign's life, in commands", run as a newcomer runs it.

Every command is read from README.md itself and run as a subprocess in a fresh
folder holding the project's campaigns and templates, with a user's
environment (no RELANCE_/PREFECT_ settings, no COLUMNS: output is piped, so 80
columns). Each command must have a check below: a README command that the test
does not know fails it, and so does a check whose command left the README.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.readme_commands import (
    RELANCE,
    REPO,
    Workspace,
    block_after,
    commands,
    ok,
    rejected_lines,
    run,
    workspace,
)

TRACKING_PORT = 8800  # serve-tracking's default, as the README runs it


# ---------------------------------------------------------------------------
# One check per README command: its exit status and one fact a user relies on
# ---------------------------------------------------------------------------


def check_demo_data(ws: Workspace, argv: list[str]) -> None:
    ok(run(ws, argv))
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path("demo-data")
    wanted = int(argv[argv.index("--customers") + 1])
    with (ws.root / out / "customers.csv").open(encoding="utf-8") as f:
        assert sum(1 for _ in csv.DictReader(f)) == wanted
    assert not (ws.root / "relance.db").exists() or ws.scalar("SELECT count(*) FROM customer") == 0


def check_import(ws: Workspace, argv: list[str]) -> None:
    ok(run(ws, argv))
    table = {"customers": "customer", "orders": "orders", "devices": "device"}[argv[2]]
    path = ws.root / argv[3]
    with path.open(encoding="utf-8") as f:
        rows = sum(1 for _ in csv.DictReader(f))
    stored = ws.scalar(f"SELECT count(*) FROM {table}")
    assert stored == rows - rejected_lines(path.with_suffix(".problems.csv")) and stored > 0


def check_validate(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    files = len(list((ws.root / "campaigns").glob("*.yaml")))
    assert f"{files} campaign file(s) checked: 0 error(s)" in " ".join(out.split())


def check_plan(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    base = ws.scalar("SELECT count(*) FROM customer WHERE erased_at IS NULL")
    row = next(line for line in out.splitlines() if re.match(r"^\W*base\b", line))
    assert f"{base:,}" in row, row
    assert "estimated cost" in out


def check_preview(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    assert "STOP" in out  # the SMS carries its opt-out
    html = list((ws.root / "previews").rglob("*.html"))
    assert html and all("<html" in p.read_text(encoding="utf-8").lower() for p in html)


def _window_closed_now(path: Path) -> bool:
    """Whether the campaign may send nothing now (its sending window / quiet hours, in Paris)."""
    from datetime import UTC, datetime

    from audiences.policy import campaign_policy
    from core.spec_loader import load_campaign

    campaign = load_campaign(path)
    now = datetime.now(UTC)
    policy = campaign_policy(campaign)
    return not any(policy.allowed(ch, now, "Europe/Paris") for ch in campaign.channels.order)


def check_run(ws: Workspace, argv: list[str]) -> None:
    out = ok(run(ws, argv))
    name = yaml.safe_load((ws.root / argv[2]).read_text(encoding="utf-8"))["name"]
    if _window_closed_now(ws.root / argv[2]):  # run as shown outside its hours: nothing may go out
        assert "nobody selected" in out and "relance plan" in out, out
        # the story goes on at the campaign's last open moment, as `relance demo` does (a test step,
        # not a README command: a newcomer at night sees the message above and runs it in the day)
        from datetime import datetime

        from relance.cli.demo import PARIS, last_sms_slot

        slot = last_sms_slot(datetime.now(PARIS)).isoformat()
        out = ok(run(ws, [*argv, "--now", slot, "--run-key", f"{name}:readme"]))
    with ws.db() as conn:
        status, run_id = conn.execute(
            "SELECT status, id FROM campaign_run WHERE campaign = ? ORDER BY id DESC", (name,)
        ).fetchone()
    sent = ws.scalar("SELECT count(*) FROM ledger WHERE run_id = ? AND status = 'sent'", run_id)
    assert status == "completed" and sent > 0
    total = next(line for line in out.splitlines() if re.match(r"^\W*total\b", line))
    assert str(sent) in total.split(), total
    assert "telemetry" not in out


def check_serve_tracking(ws: Workspace, argv: list[str]) -> None:
    """Started as the README says, it answers a link of a sent SMS; Ctrl-C stops it cleanly."""
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", TRACKING_PORT)) != 0, f"port {TRACKING_PORT} already in use"
    server = subprocess.Popen(
        [RELANCE, *argv[1:]], cwd=ws.root, env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", TRACKING_PORT)) == 0:
                    break
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "serve-tracking did not listen within 60 s"
            time.sleep(0.2)
        sms = json.loads((ws.root / "outbox" / "sms.jsonl").read_text(encoding="utf-8").splitlines()[0])
        link = re.search(r"http://\S+/s/\S+", sms["text"]).group(0)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answer:  # a 3xx is not followed: raised
            opener.open(link, timeout=10)
        assert answer.value.code in (302, 303, 307)
        assert answer.value.headers["Location"].startswith("https://maison.example/")
    finally:
        server.send_signal(signal.SIGINT)
        out = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, out
    clicks = ws.scalar(
        "SELECT count(*) FROM event WHERE type = 'clicked' AND ledger_id = ?", sms["ledger_id"]
    )
    assert clicks == 1


def check_train(ws: Workspace, argv: list[str]) -> None:
    ok(run(ws, argv))
    assert list((ws.root / "models").glob("*/*/meta.json")), "train stored no model version"


def check_models(ws: Workspace, argv: list[str]) -> None:
    out = " ".join(ok(run(ws, argv)).split())
    versions = list((ws.root / "models").glob("*/*/meta.json"))
    assert versions
    for meta in versions:
        assert meta.parent.name in out and meta.parent.parent.name in out


def check_report(ws: Workspace, argv: list[str]) -> None:
    name = argv[2]
    funnel = json.loads(
        ws.scalar("SELECT funnel FROM campaign_run WHERE campaign = ? ORDER BY id DESC", name)
    )
    done = run(ws, argv)
    out = ok(done, code=3 if done.returncode == 3 else 0)  # 3: an alert threshold crossed, as documented
    assert done.returncode == 0 or "alert" in out.lower()
    lines = out.splitlines()
    for step in funnel["steps"]:
        row = next(line for line in lines if re.match(rf"^\W*{re.escape(step['step'])}\b", line))
        assert f"{step['count']:,}" in row, (step, row)
    assert all(len(line) <= 80 for line in lines), "the report is wider than the 80-column pipe"
    assert "…" not in out, "a cell or header of the report was cut"
    html = (ws.root / "reports" / f"{name}.html").read_text(encoding="utf-8")
    assert f"{funnel['steps'][0]['count']:,}" in html or str(funnel["steps"][0]["count"]) in html


def check_deploy(ws: Workspace, argv: list[str]) -> None:
    out = " ".join(ok(run(ws, argv)).split())
    scheduled = [
        doc["name"]
        for doc in (
            yaml.safe_load(p.read_text(encoding="utf-8")) for p in (ws.root / "campaigns").glob("*.yaml")
        )
        if doc.get("schedule")
    ]
    deployments = yaml.safe_load((ws.root / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    assert set(scheduled) <= {d["name"] for d in deployments}
    assert "registered" in out and all(name in out for name in scheduled)


CHECKS: dict[tuple[str, ...], Callable[[Workspace, list[str]], None]] = {
    ("relance", "demo-data"): check_demo_data,
    ("relance", "import"): check_import,
    ("relance", "validate"): check_validate,
    ("relance", "plan"): check_plan,
    ("relance", "preview"): check_preview,
    ("relance", "run"): check_run,
    ("relance", "serve-tracking"): check_serve_tracking,
    ("relance", "train"): check_train,
    ("relance", "models"): check_models,
    ("relance", "report"): check_report,
    ("relance", "deploy"): check_deploy,
}


def check_for(argv: list[str]) -> Callable[[Workspace, list[str]], None]:
    check = CHECKS.get(tuple(argv[:2]))
    assert check is not None, (
        f"README shows `{' '.join(argv)}` but tests/test_readme_path.py has no check for it"
    )
    return check


def test_readme_block_is_what_the_checks_know():
    """Both ways: every README command has a check, and every check runs a README command."""
    argvs = commands(block_after(REPO / "README.md", "## A campaign's life"))
    seen = {tuple(argv[:2]) for argv in argvs}
    assert all(check_for(argv) for argv in argvs)
    assert seen == set(CHECKS), f"checks for commands no longer in README: {set(CHECKS) - seen}"


@pytest.mark.prefect
@pytest.mark.xdist_group("demo")
def test_a_campaigns_life_as_the_readme_shows_it(tmp_path):
    ws = workspace(tmp_path)
    for argv in commands(block_after(REPO / "README.md", "## A campaign's life")):
        check_for(argv)(ws, argv)
