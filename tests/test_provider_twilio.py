"""Twilio through the official client (async path, base URL pointed at the fake)."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from channels.registry import get_provider
from core.models import Consent, ConsentEvent, Customer, Suppression
from delivery.effects import apply_effects
from tests.fakes import messages

STOP, INVALID, LANDLINE = "+15005550004", "+15005550001", "+15005550009"


def _send(msgs):
    provider = get_provider("sms")

    async def batch():
        try:
            return await provider.send_batch(msgs)
        finally:
            await provider.aclose()  # the client lives as long as the provider (the chunks of a batch)

    return asyncio.run(batch())


def test_success_stores_sid_and_sends_service_and_callback(twilio_env, settings):
    results = _send([messages.sms(i, f"+3361234567{i}") for i in range(1, 4)])
    assert [r.status for r in results] == ["sent"] * 3
    assert all(r.provider_message_id.startswith("SM") and len(r.provider_message_id) == 34 for r in results)
    assert [r.cost_units for r in results] == [1.0] * 3
    form = twilio_env.requests[0].body
    assert form["MessagingServiceSid"].startswith("MG") and "From" not in form
    assert {r.body["StatusCallback"] for r in twilio_env.requests} == {
        f"{settings.public_base_url}/webhooks/twilio/status?ledger_id={i}" for i in range(1, 4)
    }
    assert form["Body"].startswith("Code MERCI10")
    assert twilio_env.requests[0].path == "/2010-04-01/Accounts/AC" + "0" * 32 + "/Messages.json"


def test_sender_number_when_no_messaging_service(twilio_env, monkeypatch):
    from core.settings import get_settings

    monkeypatch.delenv("RELANCE_TWILIO_MESSAGING_SERVICE_SID")
    monkeypatch.setenv("RELANCE_TWILIO_FROM", "+33700000000")
    get_settings.cache_clear()
    assert _send([messages.sms(1, "+33612345678")])[0].status == "sent"
    assert twilio_env.requests[0].body["From"] == "+33700000000"


def test_permanent_errors_are_classified_without_the_number(twilio_env):
    results = _send([messages.sms(1, STOP), messages.sms(2, INVALID), messages.sms(3, LANDLINE)])
    assert [(r.status, r.effect, r.retryable, r.attempts) for r in results] == [
        ("failed", "stop", False, 1), ("failed", "invalid", False, 1), ("failed", "invalid", False, 1)
    ]  # fmt: skip
    assert "21610" in results[0].error and "21211" in results[1].error and "21614" in results[2].error
    assert not any(n in r.error for r in results for n in (STOP, INVALID, LANDLINE))
    assert len(twilio_env.requests) == 3


def test_stop_and_invalid_update_consent_and_suppression(twilio_env, sqlite_engine):
    with sqlite_engine.begin() as conn:
        for cid, phone in ((1, STOP), (2, INVALID), (3, "+33612345678")):
            conn.execute(Customer.__table__.insert().values(id=cid, external_id=f"c{cid}", phone=phone))
            conn.execute(Consent.__table__.insert().values(customer_id=cid, channel="sms", status="granted"))
    results = _send(
        [messages.sms(1, STOP, 1), messages.sms(2, INVALID, 2), messages.sms(3, "+33612345678", 3)]
    )
    with sqlite_engine.begin() as conn:
        counts = apply_effects(conn, results)
    assert counts == {"stop": 1, "invalid": 1}
    with sqlite_engine.connect() as conn:
        consent = dict(conn.execute(select(Consent.customer_id, Consent.status)).all())
        suppressed = set(
            conn.execute(select(Suppression.address, Suppression.reason, Suppression.channel)).all()
        )
        events = conn.execute(select(ConsentEvent.customer_id, ConsentEvent.source)).all()
    assert consent == {1: "withdrawn", 2: "withdrawn", 3: "granted"}
    assert suppressed == {(STOP, "stop", "sms"), (INVALID, "invalid", "sms")}
    assert sorted(events) == [(1, "provider_error"), (2, "provider_error")]


def test_429_retry_after_honoured_then_sent(twilio_env):
    twilio_env.fail_next(1, 429, retry_after=0.5)
    start = time.monotonic()
    results = _send([messages.sms(1, "+33612345678")])
    assert results[0].status == "sent" and results[0].attempts == 2
    assert twilio_env.requests[1].at - twilio_env.requests[0].at >= 0.5 and time.monotonic() - start >= 0.5


def test_5xx_retried_then_exhausted(twilio_env):
    twilio_env.fail_next(3, 500)
    r = _send([messages.sms(1, "+33612345678")])[0]
    assert (r.status, r.retryable, r.attempts) == ("failed", True, 3) and "20500" in r.error


def test_timeout_is_unknown(twilio_env):
    twilio_env.hang_next(1)
    r = _send([messages.sms(1, "+33612345678")])[0]
    assert r.status == "unknown" and r.attempts == 1 and len(twilio_env.requests) == 1


def test_bad_credentials_permanent(twilio_env):
    twilio_env.auth_token = "other"
    r = _send([messages.sms(1, "+33612345678")])[0]
    assert r.status == "failed" and not r.retryable and "20003" in r.error
