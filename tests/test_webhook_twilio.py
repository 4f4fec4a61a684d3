"""Twilio: signed status callbacks, out-of-order statuses, STOP / START replies in French and English."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from audiences.consent import is_suppressed
from core.models import Consent, ConsentEvent, Customer
from core.settings import get_settings
from tests.test_tracking_support import client_for, events_of, make_keys, seed, status_of, twilio_headers

PUBLIC = "https://track.relance.example"
STATUS_URL = PUBLIC + "/webhooks/twilio/status"
INBOUND_URL = PUBLIC + "/webhooks/twilio/inbound"


@pytest.fixture
def client(engine):
    # The app sees http://testserver/...; Twilio signed the public URL: as behind a proxy.
    with client_for(get_settings(), make_keys(), public_base_url=PUBLIC) as c:
        yield c


def _status(client, sid, status, code=None, url=STATUS_URL, path="/webhooks/twilio/status"):
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC1", "To": "+33600000000"}
    if code:
        params["ErrorCode"] = code
    return client.post(path, data=params, headers=twilio_headers(url, params))


def _phone(engine, customer_id):
    t = Customer.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.phone).where(t.c.id == customer_id)).scalar_one()


def test_signed_status_callbacks_are_accepted_and_forged_refused(engine, client):
    world = seed(engine, n=1, channel="sms", provider_message_ids=True)
    sid = f"SM{_sid_tag(engine, world.ledger_ids[0])}"
    assert _status(client, sid, "delivered").status_code == 204
    params = {"MessageSid": sid, "MessageStatus": "failed", "ErrorCode": "21211"}
    forged = client.post(
        "/webhooks/twilio/status", data=params, headers=twilio_headers(STATUS_URL, params, "wrong")
    )
    assert forged.status_code == 403
    wrong_url = twilio_headers("http://testserver/webhooks/twilio/status", params)  # not the public URL
    assert client.post("/webhooks/twilio/status", data=params, headers=wrong_url).status_code == 403
    tampered = dict(params, ErrorCode="30003")
    assert (
        client.post(
            "/webhooks/twilio/status", data=tampered, headers=twilio_headers(STATUS_URL, params)
        ).status_code
        == 403
    )
    assert client.post("/webhooks/twilio/status", data=params).status_code == 403
    assert [e.type for e in events_of(engine)] == ["delivered"]
    assert status_of(engine, world.ledger_ids[0]) == "delivered"


def _sid_tag(engine, ledger_id):
    from core.models import LedgerEntry

    t = LedgerEntry.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.provider_message_id).where(t.c.id == ledger_id)).scalar_one()[2:]


@pytest.mark.parametrize(
    ("status", "code", "etype", "subtype", "ledger_status", "suppressed"),
    [
        ("queued", None, "processed", "queued", "sent", False),
        ("sent", None, "processed", "sent", "sent", False),
        ("delivered", None, "delivered", None, "delivered", False),
        ("undelivered", "30003", "bounced", "soft", "bounced", False),
        ("undelivered", "30005", "bounced", "hard", "bounced", True),
        ("failed", "21211", "failed", "hard", "failed", True),
        ("failed", "30008", "failed", "soft", "failed", False),
        ("failed", "21610", "failed", "hard", "failed", True),
    ],
)
def test_statuses_and_error_codes_are_mapped(
    sqlite_engine, settings, status, code, etype, subtype, ledger_status, suppressed
):
    world = seed(sqlite_engine, n=1, channel="sms", provider_message_ids=True)
    lid = world.ledger_ids[0]
    with client_for(settings, make_keys(), public_base_url=PUBLIC) as client:
        assert _status(client, "SM" + _sid_tag(sqlite_engine, lid), status, code).status_code == 204
    (event,) = events_of(sqlite_engine, ledger_id=lid)
    assert (event.type, event.subtype, event.provider) == (etype, subtype, "twilio")
    assert status_of(sqlite_engine, lid) == ledger_status
    with sqlite_engine.connect() as conn:
        assert is_suppressed(conn, _phone(sqlite_engine, world.customer_ids[0]), "sms") is suppressed


def test_out_of_order_and_repeated_callbacks(sqlite_engine, settings):
    world = seed(sqlite_engine, n=1, channel="sms", provider_message_ids=True)
    lid = world.ledger_ids[0]
    sid = "SM" + _sid_tag(sqlite_engine, lid)
    with client_for(settings, make_keys(), public_base_url=PUBLIC) as client:
        for status in ("delivered", "sent", "queued", "delivered"):  # late 'sent', retried 'delivered'
            assert _status(client, sid, status).status_code == 204
    assert status_of(sqlite_engine, lid) == "delivered"
    assert sorted(e.subtype or e.type for e in events_of(sqlite_engine)) == ["delivered", "queued", "sent"]


def test_ledger_id_in_the_signed_callback_url_is_used_when_no_sid_is_known(sqlite_engine, settings):
    world = seed(sqlite_engine, n=1, channel="sms")
    lid = world.ledger_ids[0]
    path = f"/webhooks/twilio/status?ledger_id={lid}"
    with client_for(settings, make_keys(), public_base_url=PUBLIC) as client:
        assert _status(client, "SMunknown", "delivered", url=PUBLIC + path, path=path).status_code == 204
    assert status_of(sqlite_engine, lid) == "delivered"


def _inbound(client, phone, body, sid):
    params = {"MessageSid": sid, "From": phone, "To": "+33700000000", "Body": body}
    return client.post("/webhooks/twilio/inbound", data=params, headers=twilio_headers(INBOUND_URL, params))


def _consent(engine, customer_id):
    t = Consent.__table__
    with engine.connect() as conn:
        return conn.execute(
            select(t.c.status).where(t.c.customer_id == customer_id, t.c.channel == "sms")
        ).scalar()


@pytest.mark.parametrize(
    ("locale", "stop", "start", "stop_answer", "start_answer"),
    [
        ("fr_FR", "ARRÊT", "START", "ne recevrez plus", "à nouveau"),
        ("fr_FR", "stop", "unstop", "ne recevrez plus", "à nouveau"),
        ("en_GB", "STOP", "YES", "no longer receive", "again"),
        ("en_US", "Unsubscribe please", "START", "no longer receive", "again"),
        ("fr_FR", "desinscription", "Start", "ne recevrez plus", "à nouveau"),
    ],
)
def test_stop_and_start_replies(engine, client, locale, stop, start, stop_answer, start_answer):
    world = seed(engine, n=1, channel="sms", locales=(locale,))
    cid, lid = world.customer_ids[0], world.ledger_ids[0]
    phone = _phone(engine, cid)
    answer = _inbound(client, phone, stop, "SMin1")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
    assert stop_answer in answer.text and "<Message>" in answer.text
    assert _consent(engine, cid) == "withdrawn"
    with engine.connect() as conn:
        assert is_suppressed(conn, phone, "sms")
    (event,) = events_of(engine, customer_id=cid)
    assert (event.type, event.subtype, event.ledger_id) == ("unsubscribed", "stop", lid)

    answer = _inbound(client, phone, start, "SMin2")
    assert start_answer in answer.text
    assert _consent(engine, cid) == "granted"
    with engine.connect() as conn:
        assert not is_suppressed(conn, phone, "sms")
        t = ConsentEvent.__table__
        proofs = conn.execute(
            select(t.c.source, t.c.proof).where(t.c.customer_id == cid).order_by(t.c.id)
        ).all()
    assert [p.source for p in proofs] == ["stop_reply", "start_reply"]
    assert start in proofs[1].proof  # the message itself is the proof


def test_other_replies_are_stored_and_change_nothing(engine, client):
    world = seed(engine, n=1, channel="sms")
    cid = world.customer_ids[0]
    answer = _inbound(client, _phone(engine, cid), "Merci, à bientôt !", "SMin3")
    assert answer.status_code == 200 and "<Message>" not in answer.text
    assert (
        _inbound(client, _phone(engine, cid), "Start the engine", "SMin4").status_code == 200
    )  # not exact START
    assert [e.type for e in events_of(engine, customer_id=cid)] == ["replied", "replied"]
    assert _consent(engine, cid) is None


def test_stop_from_an_unknown_number_still_suppresses_it(sqlite_engine, settings):
    with client_for(settings, make_keys(), public_base_url=PUBLIC) as client:
        answer = _inbound(client, "+33612345678", "ARRET", "SMin5")
    assert "ne recevrez plus" in answer.text
    with sqlite_engine.connect() as conn:
        assert is_suppressed(conn, "+33612345678", "sms")


def test_forged_inbound_is_refused_and_changes_nothing(sqlite_engine, settings):
    world = seed(sqlite_engine, n=1, channel="sms")
    params = {"MessageSid": "SMx", "From": _phone(sqlite_engine, world.customer_ids[0]), "Body": "STOP"}
    with client_for(settings, make_keys(), public_base_url=PUBLIC) as client:
        bad = client.post(
            "/webhooks/twilio/inbound", data=params, headers=twilio_headers(INBOUND_URL, params, "x")
        )
    assert bad.status_code == 403
    assert _consent(sqlite_engine, world.customer_ids[0]) is None and events_of(sqlite_engine) == []
