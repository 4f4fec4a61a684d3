"""`relance run` on a journey file, and `relance work` joining one of its send runs, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from delivery import ledger
from journeys.engine import enter
from tests.journey_support import at, entries, messages, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import env_for, outbox_ledger_ids, seed_features, use_tmp_dirs

RELANCE = str(Path(sys.executable).parent / "relance")


def test_relance_run_enters_a_journey_and_sends_its_first_step(
    sqlite_engine, settings, tmp_path, monkeypatch
):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(sqlite_engine, 9)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path)
    env = env_for(tmp_path, str(sqlite_engine.url))
    out = subprocess.run(
        [RELANCE, "run", jf.path, "--no-prefect", "--now", "2026-11-23T10:00:00+01:00"],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "journey relance-panier: 9 customer(s) entered" in out.stdout
    assert "messages: 9 sent" in out.stdout
    assert len(outbox_ledger_ids(tmp_path / "outbox")) == 9
    assert {e["step"] for e in entries(sqlite_engine).values()} == {"three-days"}


def test_relance_work_joins_a_journey_send_run(sqlite_engine, settings, tmp_path, monkeypatch):
    """Another worker sends a journey run's batches with the step's own message and offer."""
    use_tmp_dirs(monkeypatch, tmp_path, batch_size="3")
    ids = seed_customers(sqlite_engine, 7)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path)
    from journeys.engine import advance

    now = at("2026-11-23 10:00")
    with sqlite_engine.begin() as conn:  # recorded by a tick that died before sending
        enter(conn, jf.campaign, now)
        advance(conn, jf.campaign, now)
    key = messages(sqlite_engine)[0]["run_id"]
    with sqlite_engine.connect() as conn:
        run_key = conn.execute(ledger.RUNS.select().where(ledger.RUNS.c.id == key)).mappings().one()["key"]
    env = env_for(tmp_path, str(sqlite_engine.url), batch_size=3)
    out = subprocess.run([RELANCE, "work", run_key], env=env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "3 batch(es) sent" in out.stdout
    sent = outbox_ledger_ids(tmp_path / "outbox")
    assert sorted(c for _, c in sent) == sorted(ids)
    assert {m["status"] for m in messages(sqlite_engine)} == {"sent"}


def test_relance_journeys_tick_moves_what_is_due(sqlite_engine, settings, tmp_path, monkeypatch):
    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(sqlite_engine, 5, phone_every=1)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path)
    env = env_for(tmp_path, str(sqlite_engine.url))

    def relance(*args: str) -> str:
        done = subprocess.run([RELANCE, *args], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    relance("run", jf.path, "--no-prefect", "--now", "2026-11-23T10:00:00+01:00")
    assert "nothing due in 1 journey(s)" in relance(
        "journeys", "tick", "--no-prefect", "--now", "2026-11-24T10:00"
    )
    out = relance("journeys", "tick", "--no-prefect", "--now", "2026-11-26T10:00:00+01:00")
    assert "relance-panier: 20 step(s) done" in out and "messages: 5 sent" in out  # wait, branch, SMS, exit
    assert {e["exit_reason"] for e in entries(sqlite_engine).values()} == {"reminded"}
