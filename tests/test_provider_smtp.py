"""SMTP through aiosmtplib against a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from channels.registry import get_provider
from tests.fakes import messages
from tests.fakes.smtp_fake import SmtpFake, free_port


@pytest.fixture
def smtp(settings, monkeypatch):
    from core.settings import get_settings

    with SmtpFake() as fake:
        for key, value in {"RELANCE_EMAIL_PROVIDER": "smtp", "RELANCE_SMTP_PORT": str(fake.port),
                           "RELANCE_SMTP_CONCURRENCY": "3", "RELANCE_PROVIDER_BACKOFF_BASE": "0.02",
                           "RELANCE_PROVIDER_MAX_ATTEMPTS": "3"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        yield fake


def _send(msgs):
    return asyncio.run(get_provider("email").send_batch(msgs))


def test_messages_received_with_unsubscribe_headers_over_reused_connections(smtp):
    results = _send([messages.email(i, f"client{i}@example.com") for i in range(1, 13)])
    assert [r.status for r in results] == ["sent"] * 12 and [r.ledger_id for r in results] == list(
        range(1, 13)
    )
    got = {int(r.message["X-Relance-Ledger-Id"]): r for r in smtp.handler.received}
    assert sorted(got) == list(range(1, 13))
    first = got[1].message
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["List-Unsubscribe"].startswith("<https://t.example/u/1>, <mailto:")
    assert first["To"] == "client1@example.com" and got[1].recipients == ["client1@example.com"]
    assert first.get_body(("plain",)).get_content().startswith("Bonjour")
    assert results[0].provider_message_id == first["Message-ID"]
    assert len({r.peer for r in smtp.handler.received}) == 3  # 3 connections for 12 messages


def test_unknown_mailbox_is_permanent_invalid_and_greylisting_is_retried(smtp):
    results = _send([messages.email(1, "nouser@example.com"), messages.email(2, "greylist@example.com"),
                     messages.email(3, "ok@example.com")])  # fmt: skip
    bad, grey, ok = results
    assert (bad.status, bad.effect, bad.retryable) == ("failed", "invalid", False) and "550" in bad.error
    assert (grey.status, grey.attempts) == ("sent", 2)
    assert ok.status == "sent"
    assert sorted(r.recipients[0] for r in smtp.handler.received) == [
        "greylist@example.com",
        "ok@example.com",
    ]


def test_unreachable_server_is_retryable(settings, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_EMAIL_PROVIDER", "smtp")
    monkeypatch.setenv("RELANCE_SMTP_PORT", str(free_port()))
    monkeypatch.setenv("RELANCE_PROVIDER_BACKOFF_BASE", "0.01")
    get_settings.cache_clear()
    r = _send([messages.email(1, "a@example.com")])[0]
    assert (r.status, r.retryable, r.attempts) == ("failed", True, 4) and "unreachable" in r.error
