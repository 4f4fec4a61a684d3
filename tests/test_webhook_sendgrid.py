"""SendGrid Event Webhook: signatures, every event type, duplicates, order, consent effects."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from audiences.consent import is_suppressed
from core.models import Consent, Customer
from core.settings import get_settings
from tests.test_tracking_support import (
    client_for,
    events_of,
    make_keys,
    post_sendgrid,
    seed,
    sendgrid_headers,
    sg_event,
    status_of,
)


@pytest.fixture
def keys():
    return make_keys()


@pytest.fixture
def client(engine, keys):
    with client_for(get_settings(), keys) as c:
        yield c


def test_signed_batch_is_stored_and_tied_to_the_ledger(engine, client, keys):
    world = seed(engine, n=2)
    batch = [
        sg_event("processed", world.ledger_ids[0]),
        sg_event("delivered", world.ledger_ids[0]),
        sg_event("delivered", world.ledger_ids[1]),
    ]
    response = post_sendgrid(client, keys, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "stored": 3, "duplicates": 0}
    stored = events_of(engine, ledger_id=world.ledger_ids[0])
    assert [e.type for e in stored] == ["processed", "delivered"]
    assert stored[0].customer_id == world.customer_ids[0] and stored[0].run_id == world.run_id
    assert stored[0].provider == "sendgrid" and '"sg_event_id"' in stored[0].raw
    assert status_of(engine, world.ledger_ids[0]) == "delivered"


def test_duplicates_are_stored_once(engine, client, keys):
    world = seed(engine, n=1)
    batch = [sg_event("delivered", world.ledger_ids[0]), sg_event("open", world.ledger_ids[0])]
    assert post_sendgrid(client, keys, batch).json()["stored"] == 2
    again = post_sendgrid(client, keys, batch + [batch[0]])  # SendGrid retried, with a repeat inside
    assert again.status_code == 200
    assert again.json() == {"received": 3, "stored": 0, "duplicates": 3}
    assert len(events_of(engine, ledger_id=world.ledger_ids[0])) == 2


def test_forged_altered_and_replayed_batches_are_refused(sqlite_engine, settings, keys):
    world = seed(sqlite_engine, n=1)
    body_events = [sg_event("delivered", world.ledger_ids[0])]
    with client_for(settings, keys) as client:
        forged = post_sendgrid(client, make_keys(), body_events)  # signed with another key
        assert forged.status_code == 403
        import json

        body = json.dumps(body_events).encode()
        headers = sendgrid_headers(keys, body)
        altered = client.post(
            "/webhooks/sendgrid", content=body.replace(b"delivered", b"bounce"), headers=headers
        )
        assert altered.status_code == 403
        replayed = post_sendgrid(client, keys, body_events, timestamp=int(time.time()) - 11 * 60)
        assert replayed.status_code == 403 and "stale" in replayed.text
        unsigned = client.post(
            "/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}
        )
        assert unsigned.status_code == 403
        garbage = dict(headers, **{"X-Twilio-Email-Event-Webhook-Signature": "not base64!!"})
        assert client.post("/webhooks/sendgrid", content=body, headers=garbage).status_code == 403
        assert post_sendgrid(client, keys, body_events, timestamp=int(time.time()) - 60).status_code == 200
    assert len(events_of(sqlite_engine)) == 1  # only the last, genuine one


def test_no_key_configured_refuses_everything(sqlite_engine, settings, keys):
    with client_for(settings, keys, sendgrid_webhook_public_key=None) as client:
        assert post_sendgrid(client, keys, [sg_event("delivered", None)]).status_code == 403


def test_not_a_list_is_a_bad_request(sqlite_engine, settings, keys):
    with client_for(settings, keys) as client:
        body = b'{"event": "delivered"}'
        assert (
            client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(keys, body)).status_code
            == 400
        )


def test_every_event_type_is_mapped(sqlite_engine, settings, keys):
    kinds = [
        ("processed", {}, "processed", None, "sent"),
        ("dropped", {"reason": "Invalid SMTPAPI header"}, "failed", "dropped", "failed"),
        ("delivered", {}, "delivered", None, "delivered"),
        ("deferred", {"attempt": "2"}, "deferred", "2", "sent"),
        ("bounce", {"type": "bounce", "reason": "550 unknown"}, "bounced", "hard", "bounced"),
        ("bounce", {"type": "blocked", "reason": "421 later"}, "bounced", "soft", "bounced"),
        ("open", {"sg_machine_open": False}, "opened", None, "opened"),
        ("open", {"sg_machine_open": True}, "opened", None, "delivered"),
        ("click", {"url": "https://shop.example/x"}, "clicked", None, "clicked"),
        ("spamreport", {}, "complained", None, "delivered"),
        ("unsubscribe", {}, "unsubscribed", None, "sent"),
        ("group_unsubscribe", {"asm_group_id": 7}, "unsubscribed", "group", "sent"),
        ("group_resubscribe", {"asm_group_id": 7}, "resubscribed", "group", "sent"),
    ]
    world = seed(sqlite_engine, n=len(kinds))
    batch = [
        sg_event(kind, lid, **extra) for (kind, extra, *_), lid in zip(kinds, world.ledger_ids, strict=True)
    ]
    with client_for(settings, keys) as client:
        assert post_sendgrid(client, keys, batch).json()["stored"] == len(kinds)
    for (kind, extra, etype, subtype, status), lid in zip(kinds, world.ledger_ids, strict=True):
        (event,) = events_of(sqlite_engine, ledger_id=lid)
        assert (event.type, event.subtype) == (etype, subtype), kind
        assert event.machine == bool(extra.get("sg_machine_open")), kind
        assert status_of(sqlite_engine, lid) == status, kind
    click = events_of(sqlite_engine, ledger_id=world.ledger_ids[8])[0]
    assert click.url == "https://shop.example/x"
    assert "550 unknown" in _reason(sqlite_engine, world.ledger_ids[4])


def _reason(engine, ledger_id):
    from core.models import LedgerEntry

    t = LedgerEntry.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.reason).where(t.c.id == ledger_id)).scalar_one()


def test_out_of_order_events_never_move_status_back(sqlite_engine, settings, keys):
    world = seed(sqlite_engine, n=1)
    lid = world.ledger_ids[0]
    with client_for(settings, keys) as client:
        post_sendgrid(client, keys, [sg_event("click", lid, url="https://x.example")])
        post_sendgrid(
            client, keys, [sg_event("open", lid), sg_event("delivered", lid), sg_event("processed", lid)]
        )
    assert status_of(sqlite_engine, lid) == "clicked"


def test_hard_bounce_complaint_and_unsubscribe_update_consent_and_suppression(engine, client, keys):
    world = seed(engine, n=4)
    bounce, soft, complaint, unsub = world.ledger_ids
    post_sendgrid(
        client,
        keys,
        [
            sg_event("bounce", bounce, type="bounce"),
            sg_event("bounce", soft, type="blocked"),
            sg_event("spamreport", complaint),
            sg_event("unsubscribe", unsub),
        ],
    )
    customers = Customer.__table__
    consent = Consent.__table__
    with engine.connect() as conn:
        emails = dict(conn.execute(select(customers.c.id, customers.c.email)).all())
        states = dict(
            conn.execute(
                select(consent.c.customer_id, consent.c.status).where(consent.c.channel == "email")
            ).all()
        )
        bounced, softened, complained, unsubscribed = (emails[c] for c in world.customer_ids)
        assert is_suppressed(conn, bounced, "email")
        assert not is_suppressed(conn, softened, "email")  # soft: try again next time
        assert is_suppressed(conn, complained, "email")
        assert is_suppressed(conn, unsubscribed, "email")
        assert not is_suppressed(conn, unsubscribed, "sms")  # only the channel it came from
    c_bounce, c_soft, c_complaint, c_unsub = world.customer_ids
    assert states[c_bounce] == states[c_complaint] == states[c_unsub] == "withdrawn"
    assert c_soft not in states


def test_events_of_unknown_messages_are_kept_unattached(sqlite_engine, settings, keys):
    with client_for(settings, keys) as client:
        response = post_sendgrid(client, keys, [sg_event("delivered", 999999), sg_event("delivered", None)])
    assert response.json()["stored"] == 2
    assert all(e.ledger_id is None for e in events_of(sqlite_engine))
