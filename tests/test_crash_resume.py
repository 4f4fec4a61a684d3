"""kill -9 a run at random moments, several times, then resume it: everyone exactly once, nothing twice.

The run is a real `relance run` subprocess; it is SIGKILLed at random points (during start-up,
recording, rendering, while chunks are with the provider...), then run again with the same key
until it finishes. What reached the "provider" is read from the provider itself: the outbox's
files, and the requests the fake SendGrid API accepted.

Outcomes are committed as they come back (delivery.outcomes), so a kill leaves in ``sending`` at
most the provider's ``in_flight`` rows per channel; the outbox settles its own (delivery.reconcile),
so only SendGrid rows may stay ``unknown``, each with its reason.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from aiohttp import web
from sqlalchemy import func, select

from core.models import LedgerEntry
from tests.fakes.sendgrid_fake import API_KEY, SendGridFake
from tests.fakes.server import Fault
from tests.test_ledger_support import seed_customers
from tests.test_run_support import env_for, outbox_ledger_ids, seed_features, write_campaign

L = LedgerEntry.__table__
RELANCE = str(Path(sys.executable).parent / "relance")
NOW = "2026-11-24T10:00:00+01:00"
CONCURRENCY = 8  # RELANCE_SENDGRID_CONCURRENCY of the SendGrid run: the bound on unknown per crash


def _cmd(path: Path, key: str) -> list[str]:
    return [RELANCE, "run", str(path), "--run-key", key, "--now", NOW, "--no-prefect"]


def _kill_at_random(engine, cmd, env, rng, targets, channel: str | None = None) -> list[int]:
    """Start the run once per target and SIGKILL it there; return the rows left `sending` by each kill."""
    left = []
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target is None:
            time.sleep(rng.uniform(0.2, 1.0))
        else:
            in_flight = rng.random() < 0.6  # most kills aim at rows committed `sending`
            _wait_progress(engine, proc, target, in_flight)
            if not in_flight:
                time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            left.append(_sending(engine, channel))
        proc.wait()
    return left


def _sending(engine, channel: str | None) -> int:
    where = [L.c.status == "sending"] + ([L.c.channel == channel] if channel else [])
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(*where)).scalar_one()


def _wait_progress(engine, proc: subprocess.Popen, done: int, in_flight: bool, timeout: float = 60) -> None:
    """Wait until ``done`` rows left ``planned`` (and, if ``in_flight``, some are ``sending``)."""
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


def test_killed_outbox_runs_resume_and_send_everyone_exactly_once(sqlite_engine, settings, tmp_path):
    ids = seed_customers(sqlite_engine, 240)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, control=10)
    env = env_for(tmp_path, settings.database_url, batch_size=4)
    env["RELANCE_CLAIM_TIMEOUT_SECONDS"] = "3600"  # only the dead pid lets a resume take over at once
    cmd = _cmd(path, "crash:1")
    rng = random.Random(20261122)
    # first kill during start-up or recording, then at random points of the sending, found by watching
    # the ledger (so the test does not depend on the machine's speed), plus a random few milliseconds
    targets = [None] + sorted(rng.sample(range(10, 200), 3))
    left = _kill_at_random(sqlite_engine, cmd, env, rng, targets)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert len(left) >= 3, f"the run finished before it could be killed several times ({len(left)} kills)"
    assert any(left), "no kill landed while messages were with the provider"

    with sqlite_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(L)).all()}
    statuses = Counter(r.status for r in rows.values())
    # the outbox is its own witness: nothing stays unknown, nothing planned or sending
    assert set(statuses) <= {"sent", "held_out"}, statuses
    assert len({r.customer_id for r in rows.values()}) == len(ids)  # every customer selected has a row

    delivered = outbox_ledger_ids(tmp_path / "outbox")  # what reached the provider, possibly with repeats
    counted = Counter(lid for lid, _ in delivered)
    assert max(counted.values()) == 1, "a message reached the outbox twice"
    assert Counter(cid for _, cid in delivered).most_common(1)[0][1] == 1, "a customer got two messages"
    sent = {i for i, r in rows.items() if r.status == "sent"}
    assert sent == set(counted), "the ledger's sent rows and the outbox differ"
    print(f"{len(left)} kills leaving {left} rows sending; final statuses {dict(statuses)}")


class FlakySendGrid(SendGridFake):
    """The fake SendGrid API answering 503 to a random 5 % of requests (retried by the provider)."""

    def __init__(self, seed: int, **kw) -> None:
        super().__init__(**kw)
        self.rng = random.Random(seed)

    async def mail_send(self, request: web.Request) -> web.Response:
        if self.rng.random() < 0.05:
            await self._record(request)
            return self.fault_response(Fault(503))
        return await super().mail_send(request)

    def accepted(self) -> Counter:
        """ledger id -> how many times the API accepted (202) a message for it."""
        return Counter(int(body["custom_args"]["ledger_id"]) for body in list(self.message_ids.values()))


def test_killed_sendgrid_runs_leave_at_most_the_requests_in_flight_unknown(sqlite_engine, settings, tmp_path):
    ids = seed_customers(sqlite_engine, 360, phone_every=3)
    seed_features(sqlite_engine, ids)
    path = write_campaign(tmp_path, name="mixed", control=0, channels="sms, email")  # sms via the outbox
    with FlakySendGrid(seed=16, latency=0.02) as fake:
        env = env_for(tmp_path, settings.database_url, batch_size=40)
        env.update(
            RELANCE_CLAIM_TIMEOUT_SECONDS="3600",
            RELANCE_EMAIL_PROVIDER="sendgrid",
            RELANCE_SENDGRID_HOST=fake.url,
            RELANCE_SENDGRID_API_KEY=API_KEY,
            RELANCE_SENDGRID_CONCURRENCY=str(CONCURRENCY),
            RELANCE_PROVIDER_BACKOFF_BASE="0.02",
        )
        cmd = _cmd(path, "crash:sg")
        rng = random.Random(16)
        targets = [None] + sorted(rng.sample(range(20, 280), 4))
        left = _kill_at_random(sqlite_engine, cmd, env, rng, targets, channel="email")
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        accepted = fake.accepted()
    assert final.returncode == 0, final.stderr
    assert len(left) >= 3, f"the run finished before it could be killed several times ({len(left)} kills)"
    assert any(left), "no kill landed while e-mails were with the provider"
    # a kill leaves in `sending` at most what the provider held in flight
    assert max(left) <= CONCURRENCY, left

    with sqlite_engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(L)).all()}
    assert len({r.customer_id for r in rows.values()}) == len(ids)  # every customer has a row
    statuses = Counter((r.channel, r.status) for r in rows.values())
    assert {s for _, s in statuses} <= {"sent", "unknown"}, statuses  # nothing planned, sending or lost
    assert not any(r.status == "unknown" for r in rows.values() if r.channel == "sms"), statuses

    # zero duplicates at the fake API, and every e-mail the ledger calls sent was accepted there
    assert max(accepted.values()) == 1, "an e-mail was accepted twice by the provider"
    emails = {i: r for i, r in rows.items() if r.channel == "email"}
    assert {i for i, r in emails.items() if r.status == "sent"} <= set(accepted)
    assert set(accepted) <= set(emails)
    unknown = [r for r in emails.values() if r.status == "unknown"]
    assert all(r.reason == "outcome unknown after crash" and r.provider == "sendgrid" for r in unknown)
    assert len(unknown) <= sum(left) <= CONCURRENCY * len(left), (len(unknown), left)
    # SMS through the outbox: exactly once, settled from its file
    sms = Counter(lid for lid, _ in outbox_ledger_ids(tmp_path / "outbox"))
    assert sms and max(sms.values()) == 1
    assert set(sms) == {i for i, r in rows.items() if r.channel == "sms"}
    print(
        f"{len(left)} kills leaving {left} e-mails sending; {len(unknown)} unknown "
        f"({sum(r.id in accepted for r in unknown)} accepted by the API); {dict(statuses)}"
    )
