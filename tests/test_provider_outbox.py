"""The outbox (default) and null providers, and provider selection by configuration."""

from __future__ import annotations

import asyncio
import json
import threading
from email import message_from_bytes, policy

import pytest

from channels.base import Provider
from channels.registry import ProviderConfigError, get_provider
from tests.fakes import messages


def test_default_outbox_writes_eml_and_json_lines(settings):
    email, sms, push = (get_provider(ch) for ch in ("email", "sms", "push"))
    assert all(isinstance(p, Provider) and p.name == "outbox" for p in (email, sms, push))
    res = asyncio.run(
        email.send_batch([messages.email(i, f"c{i}@example.com", customer_id=40 + i) for i in (1, 2)])
    )
    assert [(r.status, r.provider_message_id) for r in res] == [("sent", "outbox-1"), ("sent", "outbox-2")]
    asyncio.run(sms.send_batch([messages.sms(3, "+33612345678", customer_id=43)]))
    asyncio.run(push.send_batch([messages.push(4, "tok-4", customer_id=44)]))

    root = settings.outbox_dir
    eml = message_from_bytes((root / "email" / "winback" / "1.eml").read_bytes(), policy=policy.default)
    assert eml["To"] == "c1@example.com" and eml["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert eml["X-Relance-Ledger-Id"] == "1" and eml.get_body(("html",)) is not None
    lines = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in root.glob("*.jsonl")}
    assert [(x["ledger_id"], x["customer_id"], x["eml"]) for x in lines["email"]] == [
        (1, 41, "email/winback/1.eml"), (2, 42, "email/winback/2.eml")
    ]  # fmt: skip
    assert lines["sms"] == [{"ledger_id": 3, "run_id": 7, "customer_id": 43, "campaign": "winback",
                             "to": "+33612345678", "text": "Code MERCI10 (3) STOP au 36111",
                             "encoding": "GSM-7", "segments": 1}]  # fmt: skip
    assert lines["push"][0]["to"] == "tok-4" and lines["push"][0]["deep_link"] == "relance://offer/MERCI10"


def test_concurrent_batches_never_interleave_lines(settings):
    provider = get_provider("sms")

    def batch(k: int) -> None:
        for b in range(5):
            msgs = [messages.sms(k * 10_000 + b * 100 + i, "+33612345678") for i in range(100)]
            asyncio.run(provider.send_batch(msgs))

    threads = [threading.Thread(target=batch, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (settings.outbox_dir / "sms.jsonl").read_text().splitlines()
    ids = [json.loads(x)["ledger_id"] for x in lines]  # every line is whole JSON
    assert len(ids) == 2000 == len(set(ids))
    for start in range(0, 2000, 100):  # each batch is one contiguous block
        block = ids[start : start + 100]
        assert block == list(range(block[0], block[0] + 100))


def test_null_provider_discards(settings, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_PUSH_PROVIDER", "null")
    get_settings.cache_clear()
    res = asyncio.run(get_provider("push").send_batch([messages.push(9, "tok")]))
    assert res[0].status == "sent" and res[0].provider_message_id == "null-9"
    assert not settings.outbox_dir.exists()


@pytest.mark.parametrize(
    ("channel", "name", "message"),
    [("sms", "sendgrid", "sendgrid cannot send sms; write one of outbox, null, twilio"),
     ("email", "mailchimp", "'mailchimp' is not a provider: write one of outbox, null, smtp, sendgrid"),
     ("push", "fcm", "RELANCE_FCM_CREDENTIALS_FILE")],
)  # fmt: skip
def test_configuration_errors_say_what_to_write(settings, monkeypatch, channel, name, message):
    from core.settings import get_settings

    monkeypatch.setenv(f"RELANCE_{channel.upper()}_PROVIDER", name)
    get_settings.cache_clear()
    with pytest.raises(ProviderConfigError) as err:
        get_provider(channel)
    assert message in str(err.value)


def test_secrets_never_in_repr(sendgrid_env, twilio_env):
    assert "SG." not in repr(get_provider("email")) and "fake-auth-token" not in repr(get_provider("sms"))


def test_outbox_reports_each_result_and_knows_what_it_wrote(settings):
    sms = get_provider("sms")
    reported = []
    res = asyncio.run(
        sms.send_batch(
            [messages.sms(i, "+33612345678", customer_id=i) for i in (5, 6)], on_result=reported.append
        )
    )
    assert reported == res and sms.in_flight is None  # answered as a whole: the flow sends one call
    asyncio.run(sms.send_batch([messages.sms(1005, "+33612345678", customer_id=7)]))
    # the file is the witness after a crash: 5, 6 and 1005 were written, 50 and 100 never were
    assert sms.written([5, 50, 6, 100, 1005]) == {5: "outbox-5", 6: "outbox-6", 1005: "outbox-1005"}
    assert get_provider("push").written([5]) == {}  # another channel's file
