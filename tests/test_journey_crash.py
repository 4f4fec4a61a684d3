"""kill -9 journey ticks at random moments, then tick again: every due step once, no message twice.

A journey (e-mail -> wait 3 days -> branch on the e-mail's open -> SMS or exit) over a few
hundred customers runs on two clocks: the entry with its e-mail, then the end of the wait with
the branch and the SMS. Each tick runs in a process of its own, SIGKILLed at random moments,
seeded: a random few milliseconds after it starts (mostly inside the advance's transaction), or
once a random number of messages reached the outbox (inside the sending). Then ticks run again
on the same clocks until they finish. Counted per entry and step: the history, the ledger and
what the outbox provider wrote.

Why a fork server: a fresh ``python`` costs ~1-2 s of imports, and the kills need short ticks
to land inside them; the server (this module run with ``-m``) imports once and forks one child
per tick, which is the process killed (a real process with its own database connections).
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.journey_support import ENTRY, HISTORY, LEDGER, at, write_journey
from tests.test_ledger_support import seed_customers
from tests.test_run_support import env_for, outbox_ledger_ids, seed_features

REPO = Path(__file__).resolve().parent.parent
ENTERED = at("2026-11-23 10:00")  # a Monday, Paris
WAITED = ENTERED + timedelta(days=3, minutes=1)
OPENED_PATH = ["offer-email", "three-days", "opened", "thanks"]
REMINDED_PATH = ["offer-email", "three-days", "opened", "sms-reminder", "done"]


# --------------------------------------------------------------------------
# The fork server (run as `python -m tests.test_journey_crash`)
# --------------------------------------------------------------------------


def serve() -> None:
    """Read `<run|tick> <journey file> <ISO time>` lines; fork a tick for each; print its pid and exit status.

    The child makes its own engine (nothing is open in the server when it forks). What every tick
    would import or set up lazily (rendering, premailer's CSS parser: ~1.5 s) is warmed here once.
    """
    import delivery.send  # noqa: F401 - warm the lazily imported sending and rendering modules
    from channels.email_source import inline_css
    from core.db import get_engine
    from core.spec_loader import load_campaign
    from journeys.definition import JourneyFile
    from journeys.tick import run_journey, tick

    inline_css("<p>warm</p>", "p { color: #111 }")
    for line in sys.stdin:
        mode, path, when = line.split()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                jf = JourneyFile(path, load_campaign(path))
                now = datetime.fromisoformat(when)
                engine = get_engine()
                run_journey(engine, jf, now) if mode == "run" else tick(engine, [jf], now)
                code = 0
            except BaseException:  # noqa: BLE001 - reported on stderr, the exit status says it failed
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)  # reaped at once: a dead claimer's pid is gone (delivery.claims)
        print(f"exit {status}", flush=True)


class ForkServer:
    """The server subprocess and the lines it prints."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_journey_crash"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.strip())

    def start(self, mode: str, journey: str, now: datetime) -> int:
        self.proc.stdin.write(f"{mode} {journey} {now.isoformat()}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return int(self.lines.get(timeout=60).removeprefix("pid "))

    def ended(self) -> bool:
        return not self.lines.empty()

    def wait(self, timeout: float = 120) -> int:
        """The child's wait status (0: finished; SIGKILL: killed)."""
        return int(self.lines.get(timeout=timeout).removeprefix("exit "))

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)
        self.log.close()


# --------------------------------------------------------------------------
# Kills and counts
# --------------------------------------------------------------------------


def progress(engine) -> tuple[int, int, int]:
    """(history rows, ledger rows past `planned`, ledger rows `sending`)."""
    with engine.connect() as conn:
        history = conn.execute(select(func.count()).select_from(HISTORY)).scalar_one()
        moved, sending = conn.execute(
            select(func.count(), func.count().filter(LEDGER.c.status == "sending")).where(
                LEDGER.c.status.not_in(["planned", "held_out"])
            )
        ).one()
    return history, moved, sending


def _wait_for(engine, server: ForkServer, moved: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not server.ended() and time.monotonic() < deadline:
        if progress(engine)[1] >= moved:
            return
        time.sleep(0.002)


def kill_ticks(engine, server, journey, mode, now, rng, kills, step_size, attempts=20) -> list[str]:
    """Start ticks at ``now`` and SIGKILL each at a random moment, ``kills`` times (fewer if one finishes
    on its own first), the late ones after up to ``step_size`` more messages; return where each kill
    landed: `advance` (nothing committed), `after advance` (moves committed, no message sent yet) or
    `sending`."""
    landed: list[str] = []
    for _ in range(attempts):
        if len(landed) >= kills:
            break
        before = progress(engine)
        pid = server.start(mode, journey, now)
        if rng.random() < 0.4:  # a random moment early in the tick: mostly inside the advance
            time.sleep(rng.uniform(0, 0.3))
        else:  # once a random number of messages reached the provider
            _wait_for(engine, server, before[1] + rng.randint(1, step_size))
            time.sleep(rng.uniform(0, 0.01))
        if not server.ended():
            with contextlib.suppress(ProcessLookupError):  # it may end and be reaped just now
                os.kill(pid, signal.SIGKILL)
        status = server.wait()
        if status == 0:
            break  # the tick finished before the kill: nothing left to kill at this clock
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"tick failed ({status})"
        after = progress(engine)
        if after[1] > before[1] or after[2]:
            landed.append("sending")  # messages moved (or were left with the provider)
        else:  # nothing sent: killed before the advance committed, or between it and the first batch
            landed.append("advance" if after[0] == before[0] else "after advance")
        assert_nobody_lost(engine)
    return landed


def finish(server, journey, mode, now) -> None:
    """Tick at ``now`` once more, not killed: it must finish."""
    server.start(mode, journey, now)
    status = server.wait()
    assert status == 0, f"the resumed tick failed with status {status} (see server.log)"


def assert_nobody_lost(engine, journey: str = "relance-panier") -> None:
    """Every entry is active on a step of the journey, or left with a reason."""
    names = set(OPENED_PATH + REMINDED_PATH)
    with engine.connect() as conn:
        rows = conn.execute(select(ENTRY.c.status, ENTRY.c.step, ENTRY.c.exit_reason)).all()
    for status, step, reason in rows:
        assert step in names, step
        assert status == "active" or (status == "completed" and reason), (status, step, reason)


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


def crash_and_check(engine, db_url, tmp_path, customers=120, kills_per_clock=5, seed=17) -> dict:
    """Seed, kill ticks on both clocks, finish them, and check every count; return what happened."""
    ids = seed_customers(engine, customers, phone_every=1)
    seed_features(engine, ids)
    jf = write_journey(tmp_path)
    env = env_for(tmp_path, db_url, batch_size=5)
    env["RELANCE_CLAIM_TIMEOUT_SECONDS"] = "3600"  # only a dead pid lets a resume take over at once
    rng = random.Random(seed)
    step_size = max(2, customers // (2 * kills_per_clock))  # the kills stop before the tick ends
    server = ForkServer(env, tmp_path / "server.log")
    try:
        landed = kill_ticks(engine, server, jf.path, "run", ENTERED, rng, kills_per_clock, step_size)
        finish(server, jf.path, "run", ENTERED)
        opened = sorted(rng.sample(ids, len(ids) // 4))
        with engine.begin() as conn:  # a quarter opened the e-mail (tracking would write this)
            conn.execute(
                update(LEDGER)
                .where(LEDGER.c.customer_id.in_(opened), LEDGER.c.status == "sent")
                .values(status="opened")
            )
        landed += kill_ticks(engine, server, jf.path, "tick", WAITED, rng, kills_per_clock, step_size)
        finish(server, jf.path, "tick", WAITED)
        finish(server, jf.path, "tick", WAITED + timedelta(minutes=1))  # nothing left: nothing twice
    finally:
        server.close()
    return check(engine, tmp_path, ids, set(opened), landed)


def check(engine, tmp_path: Path, ids: list[int], opened: set[int], landed: list[str]) -> dict:
    with engine.connect() as conn:
        entries = {r.id: r for r in conn.execute(select(ENTRY)).all()}
        history = conn.execute(select(HISTORY).order_by(HISTORY.c.entry_id, HISTORY.c.move)).all()
        ledger = {r.id: r for r in conn.execute(select(LEDGER).where(LEDGER.c.entry_id.is_not(None))).all()}
    statuses = Counter(r.status for r in ledger.values())
    unknown = {i for i, r in ledger.items() if r.status == "unknown"}

    # no customer lost: one entry each, all left by an exit step
    assert sorted(e.customer_id for e in entries.values()) == sorted(ids)
    # every due step done once per entry, in order, moves numbered without a gap
    steps: dict[int, list[str]] = {i: [] for i in entries}
    for h in history:
        assert h.move == len(steps[h.entry_id]), f"entry {h.entry_id}: move {h.move} out of order"
        steps[h.entry_id].append(h.step)
    for entry_id, entry in entries.items():
        unknown_email = any(
            r.entry_id == entry_id and r.step == "offer-email" and r.status == "unknown"
            for r in ledger.values()
        )
        took = OPENED_PATH if entry.customer_id in opened and not unknown_email else REMINDED_PATH
        assert steps[entry_id] == took, (entry.customer_id, steps[entry_id])
        assert entry.status == "completed" and entry.exit_reason == ("opened-the-offer" if took is OPENED_PATH
                                                                      else "reminded")  # fmt: skip
    # no message twice: one ledger row per (entry, step, channel), the outbox holds each at most once
    per_step = Counter((r.entry_id, r.step, r.channel) for r in ledger.values())
    assert max(per_step.values()) == 1
    assert Counter(s for _, s, _ in per_step) == {"offer-email": len(ids), "sms-reminder": len(ids) - sum(
        1 for e in entries.values() if steps[e.id] == OPENED_PATH)}  # fmt: skip
    delivered = Counter(lid for lid, _ in outbox_ledger_ids(tmp_path / "outbox"))
    assert max(delivered.values()) == 1, "a message reached the outbox twice"
    assert set(delivered) <= set(ledger)
    sent = {i for i, r in ledger.items() if r.status in ("sent", "opened")}
    assert sent <= set(delivered), "a row the ledger calls sent never reached the outbox"
    assert set(delivered) - sent <= unknown, "the outbox holds a message the ledger does not account for"
    assert set(statuses) <= {"sent", "opened", "unknown"}, statuses  # nothing planned or sending left
    return {"kills": Counter(landed), "ledger": dict(statuses), "unknown": len(unknown),
            "history": len(history), "outbox": sum(delivered.values())}  # fmt: skip


@pytest.mark.xdist_group("journey-crash")  # its kills time ticks: the two databases one after the other
def test_killed_journey_ticks_resume_with_every_step_once_and_nothing_twice(
    engine, db_url, settings, tmp_path
):
    seen = crash_and_check(engine, db_url, tmp_path)
    kills = seen["kills"]
    print(f"{sum(kills.values())} kills {dict(kills)}; ledger {seen['ledger']}; outbox {seen['outbox']}")
    assert sum(kills.values()) >= 10, f"only {sum(kills.values())} kills landed inside a tick"
    assert kills["sending"] >= 1, "no kill landed while messages were being sent"


def test_deferred_sends_are_counted_on_sqlite(sqlite_engine, settings, tmp_path, monkeypatch):
    """A deferred send is counted as the rows it moved: SQLite's rowcount is -1 for an UPDATE that
    starts with the selection's `WITH` (journeys.engine.changed asks `changes()`)."""
    from journeys.tick import run_journey, tick
    from tests.test_run_support import use_tmp_dirs

    use_tmp_dirs(monkeypatch, tmp_path)
    ids = seed_customers(sqlite_engine, 12, phone_every=1)
    seed_features(sqlite_engine, ids)
    jf = write_journey(tmp_path)
    thursday = at("2026-11-26 10:00")
    run_journey(sqlite_engine, jf, thursday)
    sunday = tick(sqlite_engine, [jf], thursday + timedelta(days=3, minutes=1))  # no commercial SMS
    moved = sunday.advanced["relance-panier"]
    assert moved.deferred["sms-reminder"] == len(ids)
    assert moved.moves[("opened", "else")] == len(ids)
    assert moved.moves.get(("sms-reminder", "skipped"), 0) == 0


if __name__ == "__main__":
    serve()
