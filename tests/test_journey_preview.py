"""`relance preview` of a journey file: every send step, on every channel of its strategy."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from relance.cli import app

JOURNEY = """\
name: winback-journey
offer: {code: RETOUR15, discount_percent: 15, price: 12.5, url: "https://maison.example/retour"}
channels: {strategy: first_available, order: [email]}
steps:
  - name: offer-email
    send: {message: winback/offer-15}
  - name: three-days
    wait: {days: 3}
  - name: opened
    branch:
      if: {step: offer-email, response: opened}
      then: done
      else: sms-reminder
  - name: sms-reminder
    send:
      message: winback/offer-20
      channels: {order: [sms, push]}
      offer: {code: RETOUR20, discount_percent: 20}
      variants:
        - {name: plain}
        - {name: urgent, offer: {code: VITE20}}
  - name: done
    exit: completed
"""


def test_preview_renders_each_send_step_on_its_channels(settings, tmp_path: Path):
    journey = tmp_path / "winback-journey.yaml"
    journey.write_text(JOURNEY, encoding="utf-8")
    out = tmp_path / "previews"
    result = CliRunner().invoke(app, ["preview", str(journey), "--html", str(out)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.output
    # step 1: e-mail only (the journey's channels), with the journey's offer
    assert text.count("step offer-email · winback/offer-15 · variant default") == 3  # 3 sample customers
    assert "Bonjour Hélène, 15\u00a0% offerts pour votre retour" in text
    # step 2: SMS and push (the step's channels), its offer over the journey's, then each variant's
    assert text.count("step sms-reminder · winback/offer-20 · variant plain") == 3
    assert text.count("step sms-reminder · winback/offer-20 · variant urgent") == 3
    assert "RETOUR20" in text and "VITE20" in text and "RETOUR15" in text
    assert text.count("SMS") >= 6 and text.count("📱 push") == 6
    assert text.count(" e-mail ─") == 3  # no e-mail for the SMS step, though its template has one
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages[0].startswith("01-offer-email-default-") and len(pages) == 4  # 3 e-mails + index
    assert "step offer-email, default" in (out / "index.html").read_text(encoding="utf-8")


def test_preview_of_a_step_channel_the_template_lacks_fails(settings, tmp_path: Path):
    journey = tmp_path / "flash-journey.yaml"
    journey.write_text(
        "name: flash-journey\n"
        'offer: {code: "FLASH", discount_percent: 30, price: 9.99, url: "https://maison.example/flash"}\n'
        "steps:\n"
        "  - name: flash\n"
        "    send: {message: flash/sms-sale, channels: {order: [email, sms]}}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["preview", str(journey)], env={"COLUMNS": "120"})
    assert result.exit_code == 1
    assert "step flash: flash/sms-sale has no email content" in result.output
    assert "step flash · flash/sms-sale" in result.output  # its SMS is still shown
