"""README.md's "Customer events" commands as a user runs them: curl against `relance serve-tracking`,
then the backfill and upkeep commands, each checked for what it answers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest

from tests.readme_commands import RELANCE, REPO, block_after, commands, ok, run, workspace

HEADING = "## Customer events"
PORT = 8800  # serve-tracking's default, as the README's curl calls it
CSV = """event_id,type,occurred_at,external_id,email,properties
cart-1,cart_abandoned,2026-11-20 10:00,C001,,"{""cart_value"": 42.5, ""items"": 2}"
nl-1,signed_up_newsletter,2026-11-20T10:00:00Z,,jeanne.dupont@example.fr,
"""


def _serve(ws) -> subprocess.Popen:
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", PORT)) != 0, f"port {PORT} already in use"
    server = subprocess.Popen([RELANCE, "serve-tracking"], cwd=ws.root, env=ws.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", PORT)) == 0:
                return server
        assert server.poll() is None, server.stdout.read().decode()
        assert time.monotonic() < deadline, "serve-tracking did not listen within 60 s"
        time.sleep(0.2)


@pytest.mark.xdist_group("demo")
def test_customer_events_as_the_readme_shows_them(tmp_path):
    ws = workspace(tmp_path)
    ws.env["RELANCE_CONVERSIONS_API_KEY"] = "readme-key"
    ok(run(ws, ["relance", "demo-data", "--customers", "200"]))
    server = _serve(ws)
    try:
        curl = "\n".join(block_after(REPO / "README.md", HEADING, 0))
        done = subprocess.run(["bash", "-c", curl], cwd=ws.root, env=ws.env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = done.stdout.strip()  # the first answer has no newline: the second's status code follows it
        verdict, status = json.loads(out[:-3]), out[-3:]
        assert verdict["accepted"] == 2 and verdict["duplicates"] == 0
        assert [r["event_id"] for r in verdict["refused"]] == ["cart-8813"] and "integer" in verdict[
            "refused"
        ][0]["why"]
        assert status == "401"
        again = subprocess.run(["bash", "-c", curl], cwd=ws.root, env=ws.env, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert json.loads(again.stdout.strip()[:-3])["duplicates"] == 2  # retried: stored once
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    assert ws.scalar("SELECT count(*) FROM customer_event WHERE source = 'api'") == 2

    (ws.root / "events.csv").write_text(CSV, encoding="utf-8")
    for argv in commands(block_after(REPO / "README.md", HEADING, 1)):
        out = ok(run(ws, argv))
        if argv[1] == "import":
            assert ws.scalar("SELECT count(*) FROM customer_event WHERE source = 'import'") == 2, out
    assert ws.scalar("SELECT count(*) FROM customer_event WHERE type = 'lapsing'") > 0  # derived from orders
