"""`relance preview` through Typer's CliRunner, on the built-in sample customers."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from relance.cli import app

CAMPAIGN = """\
name: winback
message: winback/offer-15
offer: {code: RETOUR15, discount_percent: 15, price: 12.5, url: "https://maison.example/retour"}
variants:
  - {name: v15}
  - {name: v20, message: winback/offer-20, offer: {code: RETOUR20, discount_percent: 20}}
"""


def test_preview_renders_every_channel_and_writes_html(settings, tmp_path: Path):
    campaign = tmp_path / "winback.yaml"
    campaign.write_text(CAMPAIGN, encoding="utf-8")
    out = tmp_path / "previews"
    result = CliRunner().invoke(app, ["preview", str(campaign), "--html", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "built-in samples" in result.output
    assert "Bonjour Hélène, 15\u00a0% offerts pour votre retour" in result.output
    # the tracked link is a short /s/ link, as sent: the French promo fits one GSM-7 segment
    assert "GSM-7, 1 segment(s)" in result.output and "STOP au 36111" in result.output
    assert "/s/" in result.output
    assert "push" in result.output and "RETOUR20" in result.output
    pages = sorted(p.name for p in out.glob("*.html"))
    assert len(pages) == 7 and "index.html" in pages  # 2 variants x 3 customers + index
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "01-v15-sample-fr.html" in index and "Hello John" in index


def test_preview_sms_channel_shows_ucs2_characters(settings, tmp_path: Path):
    campaign = tmp_path / "flash.yaml"
    campaign.write_text(
        'name: flash\nmessage: flash/sms-sale\noffer: {code: "FLÊCHE", discount_percent: 30, price: 9.99,'
        ' url: "https://maison.example/flash"}\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["preview", str(campaign), "--channel", "sms"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "UCS-2 forced by: Ê" in result.output
    assert "e-mail" not in result.output


def test_preview_reports_template_errors_with_exit_code(settings, tmp_path: Path):
    campaign = tmp_path / "bad.yaml"
    campaign.write_text("name: bad\nmessage: winback/offer-15\noffer: {code: X}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["preview", str(campaign)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "content.yaml" in result.output and "offer.url" in result.output
