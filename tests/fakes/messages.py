"""Outbound messages for provider tests, built with the real rendered types of channels.render."""

from __future__ import annotations

from channels.base import Outbound
from channels.email_message import RenderedEmail, unsubscribe_headers
from channels.push_message import RenderedPush
from channels.render import RenderedSms


def email(ledger_id: int, to: str, customer_id: int = 1, campaign: str = "winback") -> Outbound:
    rendered = RenderedEmail(
        subject=f"Bonjour {ledger_id}",
        preheader="Code MERCI10",
        html=f"<p>Bonjour, votre code MERCI10 ({ledger_id})</p>",
        text=f"Bonjour, votre code MERCI10 ({ledger_id})",
        headers=unsubscribe_headers(
            f"https://t.example/u/{ledger_id}", "desabonnement@relance.example", ledger_id
        ),
        to=to,
    )
    return Outbound(ledger_id, 7, customer_id, campaign, "email", to, rendered)


def sms(ledger_id: int, to: str, customer_id: int = 1, campaign: str = "winback") -> Outbound:
    rendered = RenderedSms(text=f"Code MERCI10 ({ledger_id}) STOP au 36111", encoding="GSM-7", segments=1,
                           ucs2_chars=[], to=to)  # fmt: skip
    return Outbound(ledger_id, 7, customer_id, campaign, "sms", to, rendered)


def push(ledger_id: int, token: str, customer_id: int = 1, campaign: str = "winback") -> Outbound:
    rendered = RenderedPush(title="Bonjour", body=f"Code MERCI10 ({ledger_id})", deep_link="relance://offer/MERCI10",
                            data={"offer": "MERCI10"}, to=token)  # fmt: skip
    return Outbound(ledger_id, 7, customer_id, campaign, "push", token, rendered)
