"""Short SMS links: /s/<code> records a click like /c/<token> and redirects; forged codes record nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.render import RenderContext, Renderer
from channels.tracking_links import DbLinkRegistry, MemoryLinkRegistry, click_targets
from core.tokens import BadToken, make_short_code, read_short_code
from tests.test_tracking_support import client_for, events_of, make_keys, seed, status_of

REPO = Path(__file__).resolve().parent.parent
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
OFFER = {"code": "RETOUR15", "discount_percent": 15, "price": 12.5, "url": "https://maison.example/retour"}


@pytest.fixture
def client(sqlite_engine, settings):
    with client_for(settings, make_keys()) as c:
        yield c


def _path(url: str) -> str:
    return url.split("8800", 1)[1]


def _sms_ctx(ledger_id: int, first_name: str | None = "Hélène") -> RenderContext:
    customer = {"first_name": first_name, "locale": "fr_FR", "phone": "+33612345678"}
    return RenderContext(customer=customer, offer=dict(OFFER), campaign="winback", ledger_id=ledger_id)


def test_short_link_round_trip_records_the_click_and_redirects(sqlite_engine, client):
    world = seed(sqlite_engine, n=1, channel="sms")
    lid = world.ledger_ids[0]
    registry = DbLinkRegistry(sqlite_engine)
    sms = Renderer(REPO / "templates", links=registry).render("winback/offer-15", "sms", _sms_ctx(lid))
    url = next(word for word in sms.text.split() if "/s/" in word)
    assert len(url) < 50  # the ~100-character click URL became a short one
    r = client.get(_path(url), headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://maison.example/retour"
    assert r.headers["cache-control"].startswith("no-cache")
    (event,) = events_of(sqlite_engine, ledger_id=lid)
    assert (event.type, event.url, event.machine, event.provider) == (
        "clicked",
        "https://maison.example/retour",
        False,
        "relance",
    )
    assert status_of(sqlite_engine, lid) == "clicked"
    # the same URL for another recipient reuses the link row (one row per distinct URL)
    other = Renderer(REPO / "templates", links=DbLinkRegistry(sqlite_engine)).render(
        "winback/offer-15", "sms", _sms_ctx(lid + 1000)
    )
    assert (
        read_short_code(other.text.split("/s/", 1)[1].split()[0])[1]
        == read_short_code(url.split("/s/")[1])[1]
    )


def test_forged_or_altered_short_codes_are_refused_and_record_nothing(sqlite_engine, client):
    world = seed(sqlite_engine, n=2, channel="sms")
    lid, other = world.ledger_ids
    link_id = DbLinkRegistry(sqlite_engine).id_for("https://maison.example/retour")
    good = make_short_code(lid, link_id)
    ledger, link, tag = good.split(".")
    forged = [
        f"{make_short_code(other, link_id).split('.')[0]}.{link}.{tag}",  # another ledger row, same tag
        f"{ledger}.{link}.{'A' * len(tag)}",  # a made-up tag
        f"{ledger}.{link}.{tag[:-1]}",  # truncated
        f"{ledger}.{link}",
        "garbage",
        make_short_code(lid, link_id, secret="not-our-secret"),  # signed with another key
        make_short_code(lid, link_id + 99),  # well signed, but no such link row
    ]
    for code in forged:
        r = client.get(f"/s/{code}", follow_redirects=False)
        assert r.status_code == 404 and "location" not in r.headers, code
    assert events_of(sqlite_engine) == []
    assert client.get(f"/s/{good}", follow_redirects=False).status_code == 302


def test_short_code_signing_round_trip_and_refusals(settings):
    code = make_short_code(123456789, 3)
    assert read_short_code(code) == (123456789, 3)
    for bad in (code + "x", code.replace(".", "-"), "1.1.é23456789", ""):
        with pytest.raises(BadToken):
            read_short_code(bad)


def test_french_promo_sms_with_its_link_is_one_segment(settings):
    long_sms = Renderer(REPO / "templates").render("winback/offer-15", "sms", _sms_ctx(98765))
    short = Renderer(REPO / "templates", links=MemoryLinkRegistry())
    sms = short.render("winback/offer-15", "sms", _sms_ctx(98765))
    assert long_sms.segments == 2  # the long signed click URL costs a second segment
    assert sms.segments == 1 and sms.encoding == "GSM-7", sms.text
    assert "/s/" in sms.text and "RETOUR15" in sms.text and sms.text.endswith("STOP au 36111")
    assert sms.cost < long_sms.cost


def test_preview_registry_keeps_the_consistency_check_working(settings):
    r = Renderer(REPO / "templates", links=MemoryLinkRegistry())
    samples = [_sms_ctx(1), _sms_ctx(2, first_name=None)]
    assert r.check("winback/offer-15", ["email", "sms", "push"], OFFER, samples) == []
    sms = r.render("winback/offer-15", "sms", _sms_ctx(5))
    assert click_targets(sms.text, r.links) == ["https://maison.example/retour"]
    assert click_targets(sms.text) == []  # without the registry a short link cannot be resolved


def test_push_keeps_the_self_contained_click_url(settings):
    r = Renderer(REPO / "templates", links=MemoryLinkRegistry())
    push = r.render("winback/offer-15", "push", _sms_ctx(5))
    assert "/c/" in push.data["url"] and click_targets(push.data["url"]) == ["https://maison.example/retour"]


def test_db_registry_stores_each_url_once(engine):
    urls = ["https://maison.example/a", "https://maison.example/b?x=é"]
    first = DbLinkRegistry(engine).register(urls + urls[:1])
    again = DbLinkRegistry(engine)  # another process: same ids from the table
    assert again.register(reversed(urls)) == first and sorted(first) == sorted(urls)
    assert again.url_for(first[urls[1]]) == urls[1] and again.url_for(10**6) is None
    assert again.id_for("mailto:x@example.com") is None  # not http(s): keeps the long click URL
