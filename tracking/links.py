"""Our own tracked links: clicks, the open pixel and unsubscribe links.

Tokens are read with ``core.tokens``; a forged or altered one is refused
before anything is recorded, and a click only ever redirects to the URL
inside its signed token (no open redirect).

Machine opens and clicks (flag ``machine``), decided here:
- user agent exactly ``Mozilla/5.0`` (Apple Mail Privacy Protection's proxy
  prefetches every image at delivery with that bare string), an empty user
  agent, or a known security scanner / bot / prefetcher;
- or the request came less than ``MACHINE_SECONDS`` (2 s) after the send:
  no human opens, let alone clicks, that fast; gateways scanning mail do.
Gmail's ``GoogleImageProxy`` is NOT flagged: Gmail fetches images through it
when the reader opens the message, so it is a real open.
Machine events are stored (for audit and deliverability) but only prove
delivery: the ledger row goes to ``delivered``, not ``opened``/``clicked``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from sqlalchemy import Connection, select

from core.models import Customer, LedgerEntry, Link, utcnow
from tracking.events import NormalizedEvent, StoreResult, store_events

MACHINE_SECONDS = 2.0
_MACHINE_UA = re.compile(
    r"bot\b|crawler|spider|scanner|preview|prefetch|barracuda|mimecast|proofpoint|symantec|forcepoint"
    r"|trendmicro|safelinks|yahoomailproxy|python-requests|python-httpx|curl/|wget/|headless",
    re.IGNORECASE,
)
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


@dataclass(frozen=True)
class LedgerInfo:
    id: int
    channel: str
    sent_at: datetime | None
    locale: str | None


def is_machine(user_agent: str | None, sent_at: datetime | None, now: datetime | None = None) -> bool:
    ua = (user_agent or "").strip()
    if ua in ("", "Mozilla/5.0") or _MACHINE_UA.search(ua):
        return True
    if sent_at is not None:
        elapsed = ((now or utcnow()) - sent_at).total_seconds()
        if 0 <= elapsed < MACHINE_SECONDS:
            return True
    return False


def ledger_info(conn: Connection, ledger_id: int) -> LedgerInfo | None:
    ledger, customer = LedgerEntry.__table__, Customer.__table__
    row = conn.execute(
        select(ledger.c.id, ledger.c.channel, ledger.c.sent_at, customer.c.locale)
        .join(customer, customer.c.id == ledger.c.customer_id)
        .where(ledger.c.id == ledger_id)
    ).first()
    if row is None:
        return None
    sent_at = row.sent_at
    if sent_at is not None and sent_at.tzinfo is None:  # defensive: raw drivers may hand back naive UTC
        sent_at = sent_at.replace(tzinfo=UTC)
    return LedgerInfo(row.id, row.channel, sent_at, row.locale)


def link_url(conn: Connection, link_id: int) -> str | None:
    """The target of a short link (/s/...): a row of the ``link`` table (rows never change)."""
    table = Link.__table__
    return conn.execute(select(table.c.url).where(table.c.id == link_id)).scalar()


def _ua_raw(user_agent: str | None, **extra) -> dict:
    # No IP address: not needed for any campaign purpose, so not stored.
    return {"user_agent": user_agent, **extra}


def record_click(conn: Connection, info: LedgerInfo, url: str, user_agent: str | None) -> StoreResult:
    now = utcnow()
    event = NormalizedEvent(
        type="clicked",
        provider="relance",
        ledger_id=info.id,
        occurred_at=now,
        url=url,
        machine=is_machine(user_agent, info.sent_at, now),
        raw=_ua_raw(user_agent, url=url),
    )
    return store_events(conn, [event])


def record_open(conn: Connection, info: LedgerInfo, user_agent: str | None) -> StoreResult:
    now = utcnow()
    event = NormalizedEvent(
        type="opened",
        provider="relance",
        ledger_id=info.id,
        occurred_at=now,
        machine=is_machine(user_agent, info.sent_at, now),
        raw=_ua_raw(user_agent),
    )
    return store_events(conn, [event])


def record_unsubscribe(conn: Connection, info: LedgerInfo, how: str, user_agent: str | None) -> StoreResult:
    """Unsubscribe the customer from the channel of this message (idempotent per message)."""
    event = NormalizedEvent(
        type="unsubscribed",
        subtype=how,  # one_click (RFC 8058) or page
        provider="relance",
        provider_event_id=f"unsubscribe:{info.id}",
        ledger_id=info.id,
        occurred_at=utcnow(),
        consent_source="unsubscribe",
        raw=_ua_raw(user_agent, how=how),
    )
    return store_events(conn, [event])


_PAGES = {
    "fr": {
        "title": "Désabonnement",
        "ask": "Vous ne souhaitez plus recevoir nos messages ?",
        "button": "Me désabonner",
        "done": "C'est fait : vous ne recevrez plus nos messages sur ce canal.",
    },
    "en": {
        "title": "Unsubscribe",
        "ask": "Don't want to receive our messages any more?",
        "button": "Unsubscribe",
        "done": "Done: you will no longer receive our messages on this channel.",
    },
}


def page_language(locale: str | None, default_locale: str = "fr_FR") -> str:
    return "fr" if (locale or default_locale).lower().startswith("fr") else "en"


def unsubscribe_page(lang: str, action: str, sender: str, done: bool = False) -> str:
    """A small page: a GET never unsubscribes (link scanners follow links), the button POSTs."""
    text = _PAGES[lang]
    body = (
        f"<p>{escape(text['done'])}</p>"
        if done
        else (
            f"<p>{escape(text['ask'])}</p>"
            f'<form method="post" action="{escape(action)}">'
            f'<input type="hidden" name="confirm" value="1">'
            f'<button type="submit">{escape(text["button"])}</button></form>'
        )
    )
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{escape(text["title"])} - {escape(sender)}</title>'
        f"</head><body><h1>{escape(sender)}</h1>{body}</body></html>"
    )
