"""kill -9 a run at random moments, several times, then resume it: everyone exactly once, nothing twice.

The run is a real `relance run` subprocess writing to the outbox provider; it is
SIGKILLed at random points (during start-up, recording, rendering, between the
`sending` commit and the provider's answer...), then run again with the same
key until it finishes. The outbox is the record of what reached the "provider".
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from relance.models import LedgerEntry
from tests.test_ledger_support import seed_customers
from tests.test_run_support import env_for, outbox_ledger_ids, seed_features, write_campaign

L = LedgerEntry.__table__
RELANCE = str(Path(sys.executable).parent / "relance")


def test_killed_runs_resume_and_send_everyone_exactly_once(sqlite_engine, settings, tmp_path):
    ids = seed_customers(sqlite_engine, 240)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, control=10)
    env = env_for(tmp_path, settings.database_url, batch_size=4)
    env["RELANCE_CLAIM_TIMEOUT_SECONDS"] = "3600"  # only the dead pid lets a resume take over at once
    cmd = [
        RELANCE,
        "run",
        str(path),
        "--run-key",
        "crash:1",
        "--now",
        "2026-11-24T10:00:00+01:00",
        "--no-prefect",
    ]
    rng = random.Random(20261122)
    kills = 0
    # first kill during start-up or recording, then at random points of the sending, found by watching
    # the ledger (so the test does not depend on the machine's speed), plus a random few milliseconds
    targets = [None] + sorted(rng.sample(range(10, 200), 4))
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target is None:
            time.sleep(rng.uniform(0.2, 1.0))
        else:
            in_flight = rng.random() < 0.5  # half the kills aim at a batch committed `sending`
            _wait_progress(sqlite_engine, proc, target, in_flight)
            if not in_flight:
                time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert kills >= 4, f"the run finished before it could be killed several times ({kills} kills)"

    with sqlite_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(L)).all()}
    statuses = Counter(r.status for r in rows.values())
    assert set(statuses) <= {"sent", "unknown", "held_out"}, statuses  # all final, none planned/sending
    assert len({r.customer_id for r in rows.values()}) == len(ids)  # every customer selected has a row

    delivered = outbox_ledger_ids(tmp_path / "outbox")  # what reached the provider, possibly with repeats
    counted = Counter(lid for lid, _ in delivered)
    assert max(counted.values()) == 1, "a message reached the outbox twice"
    assert Counter(cid for _, cid in delivered).most_common(1)[0][1] == 1, "a customer got two messages"
    sent = {i for i, r in rows.items() if r.status == "sent"}
    unknown = {i for i, r in rows.items() if r.status == "unknown"}
    assert sent <= set(counted), "a row marked sent never reached the provider"
    assert set(counted) <= sent | unknown, "the provider got a message the ledger does not account for"
    # rows in flight at a crash became unknown and were never re-sent (one attempt, reason recorded)
    assert unknown, "no kill landed while a batch was with the provider"
    assert all(rows[i].attempts == 1 and rows[i].reason == "outcome unknown after crash" for i in unknown)
    assert "unknown outcome" in final.stdout or not unknown
    print(f"{kills} kills; final statuses {dict(statuses)}")


def _wait_progress(engine, proc: subprocess.Popen, done: int, in_flight: bool, timeout: float = 60) -> None:
    """Wait until ``done`` rows left ``planned`` (and, if ``in_flight``, a batch is ``sending``)."""
    deadline = time.monotonic() + timeout
    moving = L.c.status.not_in(["planned", "held_out"])
    while proc.poll() is None and time.monotonic() < deadline:
        with engine.connect() as conn:
            moved, sending = conn.execute(
                select(func.count(), func.count().filter(L.c.status == "sending")).where(moving)
            ).one()
        if moved >= done and (sending or not in_flight):
            return
        time.sleep(0.002)
