"""Our links: click redirects, the open pixel, one-click unsubscribe (POST only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from audiences.consent import is_suppressed
from core.models import Consent, Customer
from core.tokens import click_url, make_token, open_pixel_url, unsubscribe_url
from tests.test_tracking_support import client_for, events_of, make_keys, seed, status_of
from tracking.links import is_machine

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def client(sqlite_engine, settings):
    with client_for(settings, make_keys()) as c:
        yield c


def _path(url: str) -> str:
    return url.split("8800", 1)[1]


def test_click_records_and_redirects_to_the_signed_target(sqlite_engine, client):
    world = seed(sqlite_engine, n=1)
    lid = world.ledger_ids[0]
    r = client.get(
        _path(click_url(lid, "https://shop.example/p?x=1&y=é")),
        headers={"User-Agent": BROWSER},
        follow_redirects=False,
    )
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/p?x=1&y=%C3%A9"
    (event,) = events_of(sqlite_engine, ledger_id=lid)
    assert (event.type, event.url, event.machine, event.provider) == (
        "clicked",
        "https://shop.example/p?x=1&y=é",
        False,
        "relance",
    )
    assert status_of(sqlite_engine, lid) == "clicked"


def test_tampered_or_forged_click_tokens_are_refused_and_record_nothing(sqlite_engine, client):
    world = seed(sqlite_engine, n=1)
    lid = world.ledger_ids[0]
    token = make_token("click", lid, "https://shop.example/")
    evil = make_token("click", lid, "https://evil.example/")  # a valid token for ANOTHER target...
    payload, _sig = token.split(".")
    tampered = evil.split(".")[0] + "." + token.split(".")[1]  # ...with the first one's signature
    for bad in (tampered, payload + ".AAAA", "garbage", make_token("open", lid)):
        r = client.get(f"/c/{bad}", follow_redirects=False)
        assert r.status_code == 404 and "location" not in r.headers
    unsafe = client.get(f"/c/{make_token('click', lid, 'javascript:alert(1)')}", follow_redirects=False)
    assert unsafe.status_code == 400
    assert events_of(sqlite_engine) == []
    assert status_of(sqlite_engine, lid) == "sent"


def test_open_pixel_is_a_no_cache_gif_and_flags_machine_opens(sqlite_engine, client):
    world = seed(sqlite_engine, n=3)
    human, apple, scanner = world.ledger_ids
    r = client.get(_path(open_pixel_url(human)), headers={"User-Agent": BROWSER})
    assert (
        r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content.startswith(b"GIF89a")
    )
    assert "no-store" in r.headers["cache-control"] and r.headers["pragma"] == "no-cache"
    client.get(_path(open_pixel_url(apple)), headers={"User-Agent": "Mozilla/5.0"})
    client.get(_path(open_pixel_url(scanner)), headers={"User-Agent": "Barracuda Sentinel (EE)"})
    assert [e.machine for e in events_of(sqlite_engine)] == [False, True, True]
    assert status_of(sqlite_engine, human) == "opened"
    assert status_of(sqlite_engine, apple) == status_of(sqlite_engine, scanner) == "delivered"
    assert client.get("/o/forged.gif").status_code == 404
    assert len(events_of(sqlite_engine)) == 3


def test_machine_heuristic_edges():
    sent = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert is_machine(BROWSER, sent, sent + timedelta(seconds=1.999))
    assert not is_machine(BROWSER, sent, sent + timedelta(seconds=2))
    assert not is_machine(
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        sent,
        sent + timedelta(hours=1),
    )
    assert is_machine("", None) and is_machine(None, None) and is_machine("Mozilla/5.0", None)


def _consent(engine, customer_id):
    t = Consent.__table__
    with engine.connect() as conn:
        return conn.execute(
            select(t.c.status).where(t.c.customer_id == customer_id, t.c.channel == "email")
        ).scalar()


def test_one_click_unsubscribe_by_post(sqlite_engine, client):
    world = seed(sqlite_engine, n=1)
    lid, cid = world.ledger_ids[0], world.customer_ids[0]
    path = _path(unsubscribe_url(lid))
    r = client.post(path, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
    assert r.status_code == 200 and "location" not in r.headers
    assert _consent(sqlite_engine, cid) == "withdrawn"
    t = Customer.__table__
    with sqlite_engine.connect() as conn:
        email = conn.execute(select(t.c.email).where(t.c.id == cid)).scalar_one()
        assert is_suppressed(conn, email, "email")
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # again: idempotent
    (event,) = events_of(sqlite_engine, ledger_id=lid)
    assert (event.type, event.subtype) == ("unsubscribed", "one_click")


@pytest.mark.parametrize(("locale", "words"), [("fr_FR", "Me désabonner"), ("en_GB", "Unsubscribe")])
def test_get_shows_a_page_and_unsubscribes_nobody(sqlite_engine, client, locale, words):
    world = seed(sqlite_engine, n=1, locales=(locale,))
    lid, cid = world.ledger_ids[0], world.customer_ids[0]
    path = _path(unsubscribe_url(lid))
    page = client.get(path)
    assert page.status_code == 200 and words in page.text and 'method="post"' in page.text
    assert events_of(sqlite_engine) == [] and _consent(sqlite_engine, cid) is None
    assert client.post(path).status_code == 400  # an empty POST is not a decision
    done = client.post(path, data={"confirm": "1"})
    assert done.status_code == 200 and "<form" not in done.text
    assert _consent(sqlite_engine, cid) == "withdrawn"
    assert events_of(sqlite_engine)[0].subtype == "page"


def test_forged_unsubscribe_token_is_refused(sqlite_engine, client):
    world = seed(sqlite_engine, n=1)
    token = make_token("click", world.ledger_ids[0], "https://x.example")  # right signature, wrong kind
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert client.get("/u/nope").status_code == 404
    assert events_of(sqlite_engine) == [] and _consent(sqlite_engine, world.customer_ids[0]) is None
