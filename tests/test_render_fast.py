"""Fast paths of rendering keep behaviour: per-offer caching, the direct MIME serializer."""

from __future__ import annotations

import shutil
from email import message_from_bytes, policy
from pathlib import Path

import markupsafe
import pytest

from channels.email_message import RenderedEmail
from channels.render import RenderContext, Renderer, RenderError
from channels.tracking_links import click_targets

REPO = Path(__file__).resolve().parent.parent
OFFER = {"code": "RETOUR15", "discount_percent": 15, "price": 12.5, "url": "https://maison.example/retour"}


def ctx(first_name="Hélène", locale="fr_FR", offer=None, ledger_id=7, **kw) -> RenderContext:
    customer = {"first_name": first_name, "locale": locale, "email": "c@example.com", "phone": "+33612345678"}
    return RenderContext(customer=customer, offer=dict(offer or OFFER), ledger_id=ledger_id, **kw)


@pytest.fixture
def renderer(settings) -> Renderer:
    return Renderer(REPO / "templates")


def test_offer_only_texts_are_cached_per_offer_and_locale_not_shared_across(renderer):
    a = renderer.render_all("winback/offer-15", ["email", "push"], ctx())
    b = renderer.render_all("winback/offer-15", ["email", "push"], ctx(offer={**OFFER, "price": 19.9}))
    be = renderer.render_all("winback/offer-15", ["email", "push"], ctx(locale="fr_BE"))
    en = renderer.render_all("winback/offer-15", ["push"], ctx(locale="en_GB"))
    assert "12,50\u00a0€" in a["push"].body and "19,90\u00a0€" in b["push"].body
    assert "19,90\u00a0€" in b["email"].preheader and "19,90\u00a0€" in b["email"].html
    assert "€12.50" in en["push"].body
    assert be["push"].body == a["push"].body or "12,50" in be["push"].body
    # texts that read the customer are rendered per customer
    c = renderer.render("winback/offer-15", "email", ctx(first_name="Zoé", ledger_id=8))
    assert c.subject.startswith("Bonjour Zoé,") and a["email"].subject.startswith("Bonjour Hélène,")
    assert "Bonjour Zoé, vous nous manquez" in c.text and "Bonjour Hélène" not in c.html


def test_offer_values_of_other_types_are_not_confused(settings, tmp_path: Path):
    folder = tmp_path / "templates" / "t" / "one"
    folder.mkdir(parents=True)
    (folder / "content.yaml").write_text(
        'channels: [push]\nfr:\n  push:\n    title: "{{ offer.flag }}"\n    body: "x"\n', encoding="utf-8"
    )
    r = Renderer(tmp_path / "templates")
    titles = [r.render("t/one", "push", ctx(offer={"flag": v})).title for v in (True, 1, 1.0, "1")]
    assert titles == ["True", "1", "1.0", "1"]
    unhashable = r.render("t/one", "push", ctx(offer={"flag": [1, 2]}))  # not cached, still rendered
    assert unhashable.title == "[1, 2]"


def _parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def _content(msg, kind: str) -> str:
    return msg.get_body((kind,)).get_content().replace("\r\n", "\n")


@pytest.mark.parametrize("encoding", ["8bit", "quoted-printable"])
def test_to_bytes_reads_back_like_to_mime(renderer, encoding):
    recos = [{"item": "a", "name": "Thé vert", "price": 8.9, "url": "https://maison.example/p/a"}]
    email = renderer.render(
        "winback/offer-15", "email", ctx(first_name="Hélène-Françoise d’Aubigné", recommendations=recos)
    )
    sender = "Maison Relance <bonjour@relance.example>"
    fast, slow = _parse(email.to_bytes(sender, encoding)), _parse(email.to_mime(sender).as_bytes())
    assert fast.defects == [] and all(p.defects == [] for p in fast.iter_parts())
    assert fast.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]
    for name in ("Subject", "From", "To", "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert str(fast[name]) == str(slow[name]), name
    assert str(fast["Subject"]) == email.subject  # the no-break space of "15 %" survives
    assert _content(fast, "plain") == _content(slow, "plain")
    assert _content(fast, "html") == _content(slow, "html")
    assert fast["Message-ID"].endswith("@relance.example>") and fast["Date"]
    raw = email.to_bytes(sender, encoding)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only (SMTP refuses bare LF)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_to_bytes_long_lines_and_non_ascii_names():
    email = RenderedEmail(
        subject="Été 🌞 " + "très " * 40,
        preheader="",
        html="<p>" + "é" * 3000 + "</p>",
        text="ligne\n" * 3,
        headers={"List-Unsubscribe": "<https://t.example/u/x>"},
        to="client@example.com",
    )
    raw = email.to_bytes("Élise Dupré <bonjour@maison.example>")
    parsed = _parse(raw)
    assert str(parsed["Subject"]) == email.subject
    assert parsed["From"].addresses[0].display_name == "Élise Dupré"
    html = parsed.get_body(("html",))
    assert html["Content-Transfer-Encoding"] == "quoted-printable"  # 6000-octet line: not 8bit
    assert _content(parsed, "html") == email.html + "\n"
    assert parsed.get_body(("plain",))["Content-Transfer-Encoding"] == "8bit"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert raw.split(b"boundary=")[1].split(b"\r\n")[0].strip(b'"') != email.to_bytes().split(b"boundary=")[
        1
    ].split(b"\r\n")[0].strip(b'"')  # a boundary per message


def test_to_bytes_recipient_and_extra_headers(renderer):
    email = renderer.render("winback/offer-15", "email", ctx())
    parsed = _parse(email.to_bytes(to="autre@example.com", extra_headers={"X-Relance-Ledger-Id": "7"}))
    assert parsed["To"] == "autre@example.com" and parsed["X-Relance-Ledger-Id"] == "7"
    assert parsed["From"].addresses[0].addr_spec  # the settings' sender by default


# ---- fast paths of the compiled templates and of the SMS texts (third pass) ----------------------


def _message(tmp_path: Path, content: str, name: str = "t/one") -> Renderer:
    root = tmp_path / "templates"
    if not (root / "_layout").exists():
        shutil.copytree(REPO / "templates" / "_layout", root / "_layout")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "content.yaml").write_text(content, encoding="utf-8")
    return Renderer(root)


def test_trusted_helpers_keep_the_int_argument_limit(settings, tmp_path: Path):
    r = _message(
        tmp_path, 'channels: [push]\nfr:\n  push:\n    title: "{{ money(features.n) }}"\n    body: "x"\n'
    )
    assert r.render("t/one", "push", _n(99999)).title == "99\u202f999,00\u00a0€"
    with pytest.raises(RenderError, match="not allowed"):
        r.render("t/one", "push", _n(100001))
    with pytest.raises(RenderError, match="not allowed"):  # an untrusted callee, same check
        _message(tmp_path, "channels: [sms]\nfr:\n  sms: \"{{ 'a'.ljust(features.n) }}\"\n", "t/two").render(
            "t/two", "sms", _n(10**6)
        )


def _n(value: int) -> RenderContext:
    return RenderContext(customer={"locale": "fr_FR"}, offer={"code": "X"}, features={"n": value})


def test_html_escaping_is_markupsafe_escaping(renderer):
    name = """O'Brien "Bob" <b>&</b>"""
    email = renderer.render("winback/offer-15", "email", ctx(first_name=name))
    assert str(markupsafe.escape(f"Bonjour {name}, vous nous manquez !")) in email.html
    assert "Bonjour O&#39;Brien &#34;Bob&#34; &lt;b&gt;&amp;&lt;/b&gt;" in email.html
    assert f"Bonjour {name}, vous nous manquez !" in email.text  # the text part is not escaped


def test_missing_fields_are_still_undefined(settings, tmp_path: Path):
    r = _message(
        tmp_path,
        "channels: [push]\nfr:\n  push:\n    title: \"{{ offer.nope | default('-') }}"
        '{{ offer.code is defined }}{{ offer.gift is none }}"\n    body: "{{ customer.nope }}"\n',
    )
    good = RenderContext(customer={"locale": "fr_FR", "nope": 0}, offer={"code": "", "gift": None})
    assert r.render("t/one", "push", good).title == "-TrueTrue"
    assert r.render("t/one", "push", good).body == "0"  # a falsy value is a value
    with pytest.raises(RenderError, match="customer.nope"):
        r.render("t/one", "push", RenderContext(customer={"locale": "fr_FR"}, offer={}))


def test_sms_link_reuse_only_when_the_link_is_just_printed(settings, tmp_path: Path):
    printed = _message(
        tmp_path, 'channels: [sms]\nmarketing: false\nfr:\n  sms: "Salut {{ first_name }} : {{ link }}"\n'
    )
    a = printed.render("t/one", "sms", ctx(first_name="Léa", ledger_id=1))
    b = printed.render("t/one", "sms", ctx(first_name="Léa", ledger_id=2))
    c = printed.render("t/one", "sms", ctx(first_name="Léa", ledger_id=3, offer={**OFFER, "url": ""}))
    assert a.text.startswith("Salut Léa : http") and a.text != b.text  # each its own signed link
    assert click_targets(a.text) == click_targets(b.text) == [OFFER["url"]]
    assert c.text == "Salut Léa :"  # no link: rendered per customer (strip/normalize see the real text)
    tested = _message(
        tmp_path,
        "channels: [sms]\nmarketing: false\nfr:\n"
        '  sms: "{% if link %}Lien {{ link | length > 5 }}{% else %}Sans lien{% endif %}"\n',
        "t/two",
    )
    assert tested.render("t/two", "sms", ctx(ledger_id=4)).text == "Lien True"
    assert tested.render("t/two", "sms", ctx(ledger_id=5, offer={**OFFER, "url": ""})).text == "Sans lien"


@pytest.mark.parametrize(
    ("sms", "expected"),
    [
        ("{% filter upper %}{{ link }}{% endfilter %}", "HTTP"),
        ("{% set x %}{{ link }}{% endset %}{{ x | length > 30 }} {{ x }}", "True http"),
        ("{% for i in range(2) %}{{ link }} {% endfor %}", "http"),
    ],
)
def test_sms_link_in_blocks_is_rendered_per_customer(settings, tmp_path: Path, sms, expected):
    r = _message(tmp_path, f'channels: [sms]\nmarketing: false\nfr:\n  sms: "{sms}"\n')
    texts = [r.render("t/one", "sms", ctx(ledger_id=i)).text for i in (1, 2)]
    assert texts[0].startswith(expected) and texts[0] != texts[1]
    assert not any("\ue000" in text for text in texts)  # no placeholder left behind
