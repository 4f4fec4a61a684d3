"""FCM HTTP v1 with google-auth service-account tokens, against the fake API and token endpoint."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from channels.registry import get_provider
from core.models import Customer, Device
from delivery.effects import apply_effects
from tests.fakes import messages


def _send(msgs, provider=None):
    provider = provider or get_provider("push")
    return asyncio.run(provider.send_batch(msgs))


def test_success_with_oauth_token_from_service_account(fcm_env):
    results = _send([messages.push(i, f"tok-{i}") for i in range(1, 4)])
    assert [r.status for r in results] == ["sent"] * 3
    assert all(r.provider_message_id.startswith("projects/relance-test/messages/0:") for r in results)
    assert len(fcm_env.tokens_issued) == 1  # one token for the batch, not one per message
    sent = fcm_env.paths("messages:send")
    assert sent[0].path == "/v1/projects/relance-test/messages:send"
    assert sent[0].headers["Authorization"] == f"Bearer {fcm_env.tokens_issued[0]}"
    msg = sent[0].body["message"]
    assert msg["token"].startswith("tok-") and msg["notification"]["title"] == "Bonjour"
    assert msg["data"]["link"] == "relance://offer/MERCI10" and msg["data"]["campaign"] == "winback"
    assert all(isinstance(v, str) for v in msg["data"].values())


def test_unregistered_and_bad_token_deactivate_devices(fcm_env, sqlite_engine):
    with sqlite_engine.begin() as conn:
        conn.execute(Customer.__table__.insert().values(id=1, external_id="c1"))
        for token in ("tok-unregistered-1", "badtoken-2", "tok-ok-3"):
            conn.execute(Device.__table__.insert().values(customer_id=1, token=token, platform="android"))
    results = _send([messages.push(1, "tok-unregistered-1"), messages.push(2, "badtoken-2"),
                     messages.push(3, "tok-ok-3")])  # fmt: skip
    assert [(r.status, r.effect, r.retryable) for r in results] == [
        ("failed", "device_inactive", False), ("failed", "device_inactive", False), ("sent", None, False)
    ]  # fmt: skip
    assert "UNREGISTERED" in results[0].error and "INVALID_ARGUMENT" in results[1].error
    with sqlite_engine.begin() as conn:
        assert apply_effects(conn, results) == {"device_inactive": 2}
    with sqlite_engine.connect() as conn:
        active = dict(conn.execute(select(Device.token, Device.active)).all())
    assert active == {"tok-unregistered-1": False, "badtoken-2": False, "tok-ok-3": True}


def test_quota_exceeded_retry_after_then_sent(fcm_env):
    fcm_env.fail_next(1, 429, retry_after=0.5)
    start = time.monotonic()
    r = _send([messages.push(1, "tok-1")])[0]
    assert r.status == "sent" and r.attempts == 2 and time.monotonic() - start >= 0.5
    first, second = fcm_env.paths("messages:send")
    assert second.at - first.at >= 0.5


def test_unavailable_exhausted_is_failed_retryable(fcm_env):
    fcm_env.fail_next(3, 503)
    r = _send([messages.push(1, "tok-1")])[0]
    assert (r.status, r.retryable, r.attempts) == ("failed", True, 3) and "UNAVAILABLE" in r.error


def test_revoked_access_token_is_refreshed(fcm_env):
    provider = get_provider("push")
    assert _send([messages.push(1, "tok-1")], provider)[0].status == "sent"
    fcm_env.tokens_issued.clear()  # the server forgets the token: 401, then a fresh token works
    r = _send([messages.push(2, "tok-2")], provider)[0]
    assert r.status == "sent" and r.attempts == 2 and len(fcm_env.tokens_issued) == 1


def test_timeout_is_unknown(fcm_env):
    fcm_env.hang_next(1)
    r = _send([messages.push(1, "tok-1")])[0]
    assert r.status == "unknown" and len(fcm_env.paths("messages:send")) == 1
