"""Twilio SMS: signature check, status callbacks and inbound replies (STOP / START).

Signatures are checked with twilio's own ``RequestValidator`` against the
PUBLIC URL (``public_base_url`` + path + query), since behind a proxy the URL
the server sees is not the one Twilio signed.

Keywords. Opting out is honoured generously: the reply's FIRST word, case
and accents ignored, is one of ``STOP_WORDS`` ("Stop merci" stops). Opting
back in is strict: the whole reply must be one of ``START_WORDS``, so a
chatty reply never restores consent by accident.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from sqlalchemy import Connection, select
from twilio.request_validator import RequestValidator, get_signature_algorithm

from core.models import Customer, LedgerEntry, utcnow
from tracking.events import NormalizedEvent, StoreResult, store_events

SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

STOP_WORDS = frozenset(
    {"STOP", "ARRET", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "DESINSCRIPTION", "DESABONNEMENT"}
)
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
_FRENCH_WORDS = frozenset({"ARRET", "DESINSCRIPTION", "DESABONNEMENT"})

# Error codes that say the number itself is unusable (hard); anything else is transient (soft).
HARD_ERROR_CODES = frozenset({"21211", "21612", "21614", "30005", "30006"})
UNSUBSCRIBED_CODE = "21610"  # the recipient replied STOP to our sender before

# status -> normalized type; None = accepted by Twilio, no ledger change
_STATUS_TYPES = {
    "accepted": "processed",
    "scheduled": "processed",
    "queued": "processed",
    "sending": "processed",
    "sent": "processed",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "bounced",
    "failed": "failed",
    "canceled": "failed",
}

CONFIRMATIONS = {
    ("stop", "fr"): "Vous ne recevrez plus de SMS de {sender}. Répondez START pour vous réabonner.",
    ("stop", "en"): "You will no longer receive text messages from {sender}. Reply START to resubscribe.",
    ("start", "fr"): "Vous recevrez à nouveau les SMS de {sender}. Répondez STOP pour vous désabonner.",
    ("start", "en"): "You will receive text messages from {sender} again. Reply STOP to unsubscribe.",
}


def is_valid(
    auth_token: str | None, public_url: str, params: dict, signature: str | None, settings: str | None
) -> bool:
    """True when ``signature`` is Twilio's signature of (public_url, params) with our token."""
    if not auth_token or not signature:
        return False
    return RequestValidator(auth_token).validate(
        public_url, params, signature, get_signature_algorithm(settings)
    )


def error_class(code: str | None) -> str:
    return "hard" if code and (code in HARD_ERROR_CODES or code == UNSUBSCRIBED_CODE) else "soft"


def status_event(params: dict, ledger_id: int | None = None) -> NormalizedEvent:
    """A status callback -> a normalized event keyed (MessageSid, status) so retries are stored once."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    code = params.get("ErrorCode") or None
    ev = NormalizedEvent(
        type=_STATUS_TYPES.get(status, status or "unknown"),
        provider="twilio",
        provider_event_id=f"{sid}:{status}",
        provider_message_id=sid or None,
        ledger_id=ledger_id,
        occurred_at=utcnow(),  # Twilio's status callbacks carry no event time
        channel="sms",
        address=params.get("To"),
        raw=params,
    )
    if status in ("queued", "accepted", "scheduled", "sending", "sent"):
        ev.subtype = status
    if ev.type in ("bounced", "failed"):
        ev.subtype = error_class(code)
        ev.reason = f"{status} ({ev.subtype}): error {code}" if code else status
        if code == UNSUBSCRIBED_CODE:
            ev.suppress_reason, ev.consent_source = "stop", "stop_reply"
        elif ev.subtype == "hard" and ev.type == "failed":
            ev.suppress_reason = "invalid"
    return ev


def _word_list(body: str) -> list[str]:
    plain = unicodedata.normalize("NFKD", body).encode("ascii", "ignore").decode().upper()
    return re.findall(r"[A-Z]+", plain)


def keyword(body: str) -> str | None:
    """'stop', 'start' or None for an inbound message body."""
    words = _word_list(body or "")
    if words and words[0] in STOP_WORDS:
        return "stop"
    if len(words) == 1 and words[0] in START_WORDS:
        return "start"
    return None


def _language(locale: str | None, words: list[str], default_locale: str) -> str:
    if locale:
        return "fr" if locale.lower().startswith("fr") else "en"
    if words and words[0] in _FRENCH_WORDS:
        return "fr"
    return "fr" if default_locale.lower().startswith("fr") else "en"


def twiml(message: str | None) -> str:
    if not message:
        return '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(message)}</Message></Response>'


def handle_inbound(
    conn: Connection, params: dict, sender_name: str, default_locale: str = "fr_FR"
) -> tuple[StoreResult, str]:
    """Store an inbound SMS and apply STOP/START at once; returns the TwiML answer."""
    phone = (params.get("From") or "").strip()
    body = params.get("Body") or ""
    sid = params.get("MessageSid") or params.get("SmsSid")
    customers = Customer.__table__
    customer = conn.execute(
        select(customers.c.id, customers.c.locale)
        .where(customers.c.phone == phone, customers.c.erased_at.is_(None))
        .order_by(customers.c.id)
        .limit(1)
    ).first()
    ledger_id = None
    if customer is not None:  # the last SMS sent to them: the campaign the reply answers
        ledger = LedgerEntry.__table__
        ledger_id = conn.execute(
            select(ledger.c.id)
            .where(
                ledger.c.customer_id == customer.id, ledger.c.channel == "sms", ledger.c.sent_at.is_not(None)
            )
            .order_by(ledger.c.sent_at.desc(), ledger.c.id.desc())
            .limit(1)
        ).scalar()
    kind = keyword(body)
    ev = NormalizedEvent(
        type="replied",
        provider="twilio",
        provider_event_id=sid,
        ledger_id=ledger_id,
        customer_id=customer.id if customer else None,
        occurred_at=datetime.now(UTC),
        channel="sms",
        address=phone or None,
        raw=params,
        proof=json.dumps({"from_sid": sid, "body": body}, ensure_ascii=False),
    )
    if kind == "stop":
        ev.type, ev.subtype, ev.suppress_reason, ev.consent_source = (
            "unsubscribed",
            "stop",
            "stop",
            "stop_reply",
        )
    elif kind == "start":
        ev.type, ev.subtype, ev.restore, ev.consent_source = "resubscribed", "start", True, "start_reply"
    result = store_events(conn, [ev])
    message = None
    if kind:
        lang = _language(customer.locale if customer else None, _word_list(body), default_locale)
        message = CONFIRMATIONS[(kind, lang)].format(sender=sender_name)
    return result, twiml(message)
