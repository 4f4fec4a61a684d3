"""Rendering: escaping, sandbox limits, error locations, Babel formats, headers, links, consistency."""

from __future__ import annotations

import shutil
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from channels.render import RenderContext, Renderer, RenderError
from channels.tracking_links import click_targets
from core.tokens import read_token

REPO = Path(__file__).resolve().parent.parent
OFFER = {"code": "RETOUR15", "discount_percent": 15, "price": 12.5, "url": "https://maison.example/retour"}


def ctx(first_name="Hélène", locale="fr_FR", **kw) -> RenderContext:
    customer = {"first_name": first_name, "locale": locale, "email": "c@example.com", "phone": "+33612345678"}
    return RenderContext(customer=customer, offer=dict(OFFER), campaign="winback", ledger_id=7, **kw)


@pytest.fixture
def renderer(settings) -> Renderer:
    return Renderer(REPO / "templates")


@pytest.fixture
def scratch(settings, tmp_path: Path):
    """A templates dir with the real layout, where a test writes its own message."""
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates" / "_layout", root / "_layout")

    def write(name: str, content: str, **files: str) -> Renderer:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "content.yaml").write_text(content, encoding="utf-8")
        for filename, text in files.items():
            (folder / filename.replace("_", ".")).write_text(text, encoding="utf-8")
        return Renderer(root)

    return write


def test_customer_name_is_escaped_in_html_but_not_in_sms(renderer):
    out = renderer.render_all(
        "winback/offer-15", ["email", "sms"], ctx(first_name="<script>alert(1)</script>")
    )
    assert "<script>" not in out["email"].html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out["email"].html
    assert out["email"].subject.startswith("Bonjour <script>")  # subject is text, not HTML
    assert "Bonjour <script>alert(1)</script> !" in out["sms"].text


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "range(10**9) | list | length",
        "'x' * 10**8",
        "[1] * 10**7",
        "'a'.ljust(10**9)",
        "2 ** 100000",
    ],
)
def test_sandbox_stops_dangerous_templates(scratch, expression):
    r = scratch("evil/one", f'channels: [sms]\nfr:\n  sms: "{{{{ {expression} }}}}"\n')
    with pytest.raises(RenderError) as info:
        r.render("evil/one", "sms", ctx())
    assert info.value.file.endswith("evil/one/content.yaml")
    assert info.value.line == 3


def test_undefined_variable_names_variable_template_and_line(scratch):
    r = scratch(
        "typo/one",
        "channels: [email]\nfr:\n  headline: Bonjour\n  body: Texte\n  cta: Go\n"
        "  email:\n    subject: Promo\n",
        email_html_j2='{% extends "_layout/email.html.j2" %}\n{% block header %}\nLogo\n{{ offer.cod }}\n'
        "{% endblock %}\n",
    )
    with pytest.raises(RenderError) as info:
        r.render("typo/one", "email", ctx())
    err = info.value
    assert err.file.endswith("typo/one/email.html.j2") and err.line == 4
    assert "offer.cod" in err.message and "undefined" in err.message


def test_undefined_in_content_yaml_points_at_its_line(scratch):
    r = scratch("typo/two", "channels: [sms]\nfr:\n  sms: >-\n    Bonjour\n    {{ custmer.first_name }}\n")
    with pytest.raises(RenderError) as info:
        r.render("typo/two", "sms", ctx())
    assert info.value.line == 4  # the folded scalar's first line (text starts on line 4)
    assert "custmer" in str(info.value)


def test_babel_formats_per_locale(renderer):
    fr = renderer.render("winback/offer-15", "push", ctx(locale="fr_FR"))
    en = renderer.render("winback/offer-15", "push", ctx(locale="en_GB", first_name="John"))
    assert "12,50\u00a0€" in fr.body
    assert "€12.50" in en.body
    assert fr.title == "Vous nous manquez, -15\u00a0%"


def test_locale_fallback_and_first_name_fallback(renderer):
    de = renderer.render("winback/offer-15", "email", ctx(locale="de_DE", first_name=None))
    assert de.subject.startswith("Bonjour, ")  # default_locale fr_FR, no first name
    en = renderer.render("winback/offer-15", "email", ctx(locale="en_US", first_name="  "))
    assert en.subject.startswith("Hello, ")


def test_unsubscribe_headers_and_mime(renderer, settings):
    email = renderer.render("winback/offer-15", "email", ctx())
    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_part, mailto_part = [p.strip(" <>") for p in email.headers["List-Unsubscribe"].split(",")]
    assert https_part.startswith(settings.public_base_url + "/u/")
    assert read_token("unsubscribe", https_part.rsplit("/", 1)[1]).ledger_id == 7
    assert mailto_part.startswith(f"mailto:{settings.unsubscribe_mailto}")
    parsed = message_from_bytes(email.to_mime().as_bytes(), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["To"] == "c@example.com" and "Hélène" in parsed["Subject"]


def test_links_are_tracked_and_tokens_verify(renderer):
    recos = [{"item": "a", "name": "Thé", "price": 8.9, "url": "https://maison.example/p/a"}]
    email = renderer.render("winback/offer-15", "email", ctx(recommendations=recos))
    assert 'href="https://maison.example' not in email.html  # every product link goes through /c/
    assert click_targets(email.html) == ["https://maison.example/retour", "https://maison.example/p/a"]
    token = email.html.split("/c/", 1)[1].split('"', 1)[0]
    data = read_token("click", token)
    assert (data.ledger_id, data.url) == (7, "https://maison.example/retour")
    assert "/o/" in email.html  # open pixel
    sms = renderer.render("winback/offer-15", "sms", ctx())
    assert click_targets(sms.text) == ["https://maison.example/retour"]


def test_notrack_keeps_the_link(scratch):
    r = scratch(
        "links/one",
        "channels: [email]\nfr:\n  headline: H\n  body: B\n  cta: C\n  email:\n    subject: S\n",
        email_html_j2='{% extends "_layout/email.html.j2" %}{% block header %}'
        '<a href="https://maison.example/cgv" data-notrack>CGV</a>'
        '<a href="https://maison.example/{{ offer.code }}">X</a>{% endblock %}',
    )
    html = r.render("links/one", "email", ctx()).html
    assert '<a href="https://maison.example/cgv">CGV</a>' in html
    assert "https://maison.example/RETOUR15" in click_targets(html)


def test_consistency_check_catches_mismatched_price(scratch):
    r = scratch(
        "bad/price",
        "channels: [sms, push]\nfr:\n"
        '  sms: "Code {{ offer.code }} dès {{ money(offer.price) }} {{ link }}"\n'
        '  push:\n    title: "Promo"\n    body: "Code {{ offer.code }} dès 15 € {{ link }}"\n',
    )
    problems = r.check("bad/price", ["sms", "push"], OFFER, [ctx()])
    assert len(problems) == 1
    text = problems[0].message
    assert "price 12,50 €" in text and "MISSING (15 €)" in text
    assert "sms" in text.splitlines()[1] and "push" in text.splitlines()[1]


def test_shipped_messages_pass_check(renderer):
    samples = [ctx(), ctx(locale="en_GB", first_name="John"), ctx(first_name=None)]
    for message in ("winback/offer-15", "winback/offer-20", "flash/sms-sale"):
        assert renderer.check(message, renderer.channels_of(message), OFFER, samples) == [], message
    assert renderer.channels_of("flash/sms-sale") == ["sms", "push"]
    assert renderer.exists("welcome/hello") and not renderer.exists("nope/none")


def test_check_reports_sms_over_segment_limit(scratch):
    r = scratch("long/sms", "channels: [sms]\nfr:\n  sms: \"{{ 'Très long texte. ' * 40 }}\"\n")
    problems = r.check("long/sms", ["sms"], {}, [ctx()])
    assert len(problems) == 1 and "segments" in problems[0].message and problems[0].line == 3


def test_one_bad_recipient_does_not_break_the_next(scratch):
    r = scratch("per/recipient", 'channels: [sms]\nfr:\n  sms: "{{ features.points }} points"\n')
    with pytest.raises(RenderError):
        r.render("per/recipient", "sms", ctx())
    ok = r.render("per/recipient", "sms", RenderContext(customer={"locale": "fr_FR"}, features={"points": 3}))
    assert ok.text.startswith("3 points")
