"""SendGrid through the official client's request building, against the fake v3 API."""

from __future__ import annotations

import asyncio
import time

from channels.registry import get_provider
from tests.fakes import messages


def _send(msgs):
    provider = get_provider("email")
    return provider, asyncio.run(provider.send_batch(msgs))


def test_success_carries_ledger_id_categories_and_unsubscribe_headers(sendgrid_env):
    provider, results = _send([messages.email(i, f"client{i}@example.com") for i in range(1, 6)])
    assert provider.name == "sendgrid"
    assert [r.status for r in results] == ["sent"] * 5 and [r.ledger_id for r in results] == [1, 2, 3, 4, 5]
    assert all(r.provider_message_id in sendgrid_env.message_ids for r in results)
    body = sendgrid_env.message_ids[results[0].provider_message_id]
    assert body["personalizations"][0]["to"] == [{"email": "client1@example.com"}]
    assert body["custom_args"] == {"ledger_id": "1", "run_id": "7", "campaign": "winback"}
    assert body["categories"] == ["winback"]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert body["headers"]["List-Unsubscribe"].startswith("<https://t.example/u/1>")
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "mail_settings" not in body
    req = sendgrid_env.paths("/v3/mail/send")[0]
    assert req.headers["Authorization"].startswith("Bearer SG.") and "python" in req.headers["User-Agent"]


def test_sandbox_mode(sendgrid_env, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_SENDGRID_SANDBOX", "true")
    get_settings.cache_clear()
    _, results = _send([messages.email(1, "a@example.com")])
    assert results[0].status == "sent"
    assert sendgrid_env.requests[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert not sendgrid_env.message_ids  # validated, not delivered


def test_invalid_address_is_permanent_with_effect_and_no_address_in_error(sendgrid_env):
    _, results = _send([messages.email(1, "bounce@example.com"), messages.email(2, "ok@example.com")])
    bad, good = results
    assert (bad.status, bad.retryable, bad.effect, bad.attempts) == ("failed", False, "invalid", 1)
    assert "bounce@example.com" not in bad.error and "personalizations.0.to.0.email" in bad.error
    assert good.status == "sent"


def test_5xx_then_success_is_retried(sendgrid_env):
    sendgrid_env.fail_next(2, 503)
    _, results = _send([messages.email(1, "a@example.com")])
    assert results[0].status == "sent" and results[0].attempts == 3


def test_retries_exhausted_is_failed_retryable(sendgrid_env):
    sendgrid_env.fail_next(5, 500)
    _, results = _send([messages.email(1, "a@example.com")])
    r = results[0]
    assert (r.status, r.retryable, r.attempts, r.effect) == ("failed", True, 3, None)
    assert "sendgrid 500" in r.error


def test_429_retry_after_is_honoured(sendgrid_env):
    sendgrid_env.fail_next(1, 429, retry_after=0.6)
    start = time.monotonic()
    _, results = _send([messages.email(1, "a@example.com")])
    assert results[0].status == "sent" and results[0].attempts == 2
    first, second = sendgrid_env.requests
    assert second.at - first.at >= 0.6 and time.monotonic() - start >= 0.6


def test_bad_key_is_permanent(sendgrid_env):
    sendgrid_env.api_key = "SG.other"
    _, results = _send([messages.email(1, "a@example.com")])
    assert results[0].status == "failed" and not results[0].retryable and "401" in results[0].error


def test_timeout_after_sending_is_unknown_and_not_retried(sendgrid_env):
    sendgrid_env.hang_next(1)
    _, results = _send([messages.email(1, "a@example.com")])
    assert results[0].status == "unknown" and results[0].attempts == 1
    assert len(sendgrid_env.requests) == 1  # never re-sent blindly


def test_connection_refused_is_retryable(sendgrid_env, monkeypatch):
    import socket

    from core.settings import get_settings

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RELANCE_SENDGRID_HOST", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    _, results = _send([messages.email(1, "a@example.com")])
    assert (results[0].status, results[0].retryable, results[0].attempts) == ("failed", True, 3)
    assert "unreachable" in results[0].error


def test_missing_key_names_the_variable(settings, monkeypatch):
    import pytest

    from channels.registry import ProviderConfigError
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_EMAIL_PROVIDER", "sendgrid")
    get_settings.cache_clear()
    with pytest.raises(ProviderConfigError, match="RELANCE_SENDGRID_API_KEY"):
        get_provider("email")


def test_each_result_is_reported_as_it_comes_back(sendgrid_env):
    provider = get_provider("email")
    reported = []

    def on_result(result):
        reported.append((result.ledger_id, result.status))

    sendgrid_env.fail_next(1, 503)  # the first request is retried: its result comes back last
    res = asyncio.run(
        provider.send_batch([messages.email(i, f"c{i}@example.com") for i in (1, 2, 3)], on_result)
    )
    assert (
        sorted(reported) == [(r.ledger_id, r.status) for r in res] == [(1, "sent"), (2, "sent"), (3, "sent")]
    )
    assert reported[-1][0] == 1 and provider.in_flight == 256
    asyncio.run(provider.aclose())
