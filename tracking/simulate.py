"""Plausible responses to a run, driven THROUGH the tracking endpoints (for the demo).

``simulate_responses(run_id, target, seed)`` plays what providers and readers
would do for the run's sent ledger rows: signed SendGrid batches (processed,
delivered, bounces, complaints), Twilio-signed status callbacks and STOP /
other replies, opens through our pixel, clicks through our links, one-click
unsubscribes, and purchases posted to the conversions API.
Nothing is written to the database directly: the endpoints do it.

Purchases follow a small, explicit model of the world (see ``Rates``): every
customer of the run, treated or held out, buys on their own with the same
probability ``organic``; a treated customer whose message arrived buys with
``lift`` more (the campaign's true effect, 0 for a message that changes
nothing); a treated buyer whose message arrived comes through its link (a
click, then the purchase). So the report's uplift against the control group
estimates ``lift`` times the share of messages that arrived, with noise.

Why the link: attribution (``click`` by default) credits a purchase to the message only after a
click, and that is the report's `converted` column. ``via_link`` below 1 makes treated buyers skip
the message's link: attribution credits fewer purchases, while the report's uplift, which counts
every purchase within the window in both groups (tracking/attribution.py), still sees the lift.

``target``: None (an in-process app with freshly generated demo keys), a
FastAPI/ASGI app (pass the keys it was built with), or a base URL of a
running `relance serve-tracking` (pass the private key matching its
RELANCE_SENDGRID_WEBHOOK_PUBLIC_KEY, see ``generate_sendgrid_keypair``).

Why one module of ~400 lines: it is one script of the demo; the world's rates, the draws and the
HTTP calls that play them are read in order and change together.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator

from core.models import Customer, LedgerEntry
from core.settings import Settings, get_settings
from core.tokens import make_token
from tracking.links import MACHINE_SECONDS

_SENT = ("sent", "delivered", "opened", "clicked", "converted")
BROWSER_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1"
)
APPLE_MPP_UA = "Mozilla/5.0"  # Apple Mail Privacy Protection's proxy: flagged as a machine open
DEFAULT_TARGET_URL = "https://shop.relance.example/offre"


@dataclass(frozen=True)
class Rates:
    """Probabilities per sent message (email unless said otherwise)."""

    hard_bounce: float = 0.02
    soft_bounce: float = 0.01
    open: float = 0.45
    machine_open: float = 0.15  # share of opens made by Apple's proxy
    click: float = 0.12
    complaint: float = 0.003
    unsubscribe: float = 0.015
    sms_undelivered: float = 0.03
    sms_failed: float = 0.02
    sms_stop: float = 0.03
    sms_reply: float = 0.02
    sms_click: float = 0.08
    push_click: float = 0.10
    # purchases within the campaign's conversion window, per customer (see the module doc)
    organic: float = 0.05  # bought anyway: the same for treated and held-out customers
    lift: float = 0.05  # more, for a treated customer whose message arrived: the true treatment effect
    via_link: float = 1.0  # share of those treated buyers who come through the message's link


def generate_sendgrid_keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public half in SendGrid's format (base64 DER, for the settings)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def sign_sendgrid(private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | None = None) -> dict:
    """The headers SendGrid would send with ``body`` (ECDSA SHA-256 over timestamp + body)."""
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def _load_key(key: Any) -> ec.EllipticCurvePrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    return serialization.load_pem_private_key(key.encode() if isinstance(key, str) else key, password=None)


class _Driver:
    def __init__(
        self, client: httpx.AsyncClient, settings: Settings, private, twilio_token: str, api_key: str
    ):
        self.client, self.settings = client, settings
        self.private, self.validator = private, RequestValidator(twilio_token)
        self.api_key = api_key
        self.limit = asyncio.Semaphore(8)
        self.counts: dict[str, int] = {}

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    async def _send(self, method: str, url: str, **kw) -> httpx.Response:
        async with self.limit:
            for attempt in range(5):  # like the providers: retry 5xx and connection errors
                try:
                    response = await self.client.request(method, url, **kw)
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                else:
                    if response.status_code < 500 or attempt == 4:
                        return response
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def sendgrid(self, events: list[dict]) -> None:
        for start in range(0, len(events), 100):
            body = json.dumps(events[start : start + 100]).encode()
            r = await self._send(
                "POST", "/webhooks/sendgrid", content=body, headers=sign_sendgrid(self.private, body)
            )
            r.raise_for_status()
            self.count("sendgrid_batches")

    async def twilio(self, path: str, params: dict) -> httpx.Response:
        url = self.settings.public_base_url.rstrip("/") + path
        signature = self.validator.compute_signature(url, params)
        r = await self._send("POST", path, data=params, headers={"X-Twilio-Signature": signature})
        r.raise_for_status()
        return r

    async def get(self, path: str, ua: str) -> httpx.Response:
        return await self._send("GET", path, headers={"User-Agent": ua})


def _sendgrid_event(kind: str, row, **extra) -> dict:
    return {
        "event": kind,
        "email": row.email,
        "timestamp": int(time.time()),
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"sim.{row.id}",
        "ledger_id": str(row.id),
        "run_id": str(row.run_id),
        "campaign": row.campaign,
        **extra,
    }


async def _simulate(driver: _Driver, rows: list, rng: random.Random, rates: Rates) -> None:
    sent = [r for r in rows if r.status in _SENT and not r.in_control]
    emails = [r for r in sent if r.channel == "email"]
    sms = [r for r in sent if r.channel == "sms"]
    push = [r for r in sent if r.channel == "push"]

    # 1. provider outcomes
    delivered_email, events = [], []
    for r in emails:
        events.append(_sendgrid_event("processed", r))
        draw = rng.random()
        if draw < rates.hard_bounce:
            events.append(_sendgrid_event("bounce", r, type="bounce", reason="550 5.1.1 user unknown"))
        elif draw < rates.hard_bounce + rates.soft_bounce:
            events.append(_sendgrid_event("bounce", r, type="blocked", reason="421 try again later"))
        else:
            events.append(_sendgrid_event("delivered", r, response="250 OK"))
            delivered_email.append(r)
    await driver.sendgrid(events)
    driver.count("sendgrid_events", len(events))

    delivered_sms = []

    async def sms_status(r, draw: float) -> None:
        sid = r.provider_message_id or f"SMsim{r.id:010d}"
        path = "/webhooks/twilio/status" + ("" if r.provider_message_id else f"?ledger_id={r.id}")
        base = {"MessageSid": sid, "AccountSid": "ACsimulated", "To": r.phone or "", "From": "RELANCE"}
        await driver.twilio(path, {**base, "MessageStatus": "sent"})
        if draw < rates.sms_undelivered:
            await driver.twilio(path, {**base, "MessageStatus": "undelivered", "ErrorCode": "30003"})
        elif draw < rates.sms_undelivered + rates.sms_failed:
            await driver.twilio(path, {**base, "MessageStatus": "failed", "ErrorCode": "21211"})
        else:
            await driver.twilio(path, {**base, "MessageStatus": "delivered"})
            delivered_sms.append(r)
        driver.count("twilio_callbacks", 2)

    draws = [rng.random() for _ in sms]  # drawn up front: the callbacks run concurrently
    await asyncio.gather(*(sms_status(r, d) for r, d in zip(sms, draws, strict=True)))
    delivered_sms.sort(key=lambda r: r.id)
    arrived = {r.id for r in (*delivered_email, *delivered_sms, *push)}
    buyers, via_link = _buyers(rows, arrived, rng, rates)

    # 2. readers (after the machine-open threshold, so human opens are not taken for scanners)
    latest = max((r.sent_at for r in sent if r.sent_at is not None), default=None)
    if latest is not None:
        latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
        wait = MACHINE_SECONDS + 0.2 - (datetime.now(UTC) - latest).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
    clicked: set[int] = set()
    tasks = []
    complaints = []
    for r in delivered_email:
        if r.id in via_link:  # a buyer coming through the message: reads it, clicks
            tasks.append(driver.get(f"/o/{make_token('open', r.id)}.gif", BROWSER_UA))
            tasks.append(driver.get(f"/c/{make_token('click', r.id, DEFAULT_TARGET_URL)}", BROWSER_UA))
            driver.count("opens")
            clicked.add(r.id)
        elif rng.random() < rates.open:
            ua = APPLE_MPP_UA if rng.random() < rates.machine_open else BROWSER_UA
            tasks.append(driver.get(f"/o/{make_token('open', r.id)}.gif", ua))
            driver.count("opens")
            if ua == BROWSER_UA and rng.random() < rates.click / rates.open:
                tasks.append(driver.get(f"/c/{make_token('click', r.id, DEFAULT_TARGET_URL)}", BROWSER_UA))
                clicked.add(r.id)
        if rng.random() < rates.complaint:
            complaints.append(_sendgrid_event("spamreport", r))
        elif rng.random() < rates.unsubscribe:
            tasks.append(
                driver._send(
                    "POST", f"/u/{make_token('unsubscribe', r.id)}", data={"List-Unsubscribe": "One-Click"}
                )
            )
            driver.count("unsubscribes")
    for rows_, rate in ((delivered_sms, rates.sms_click), (push, rates.push_click)):
        for r in rows_:
            if r.id in via_link or rng.random() < rate:
                tasks.append(driver.get(f"/c/{make_token('click', r.id, DEFAULT_TARGET_URL)}", BROWSER_UA))
                clicked.add(r.id)
    await asyncio.gather(*tasks)
    driver.count("clicks", len(clicked))
    if complaints:
        await driver.sendgrid(complaints)
        driver.count("complaints", len(complaints))

    # 3. replies
    for i, r in enumerate(delivered_sms):
        draw = rng.random()
        if draw < rates.sms_stop:
            body = "ARRET" if (r.locale or "fr").startswith("fr") and i % 2 else "STOP"
            driver.count("stop_replies")
        elif draw < rates.sms_stop + rates.sms_reply:
            body = "Merci !"
            driver.count("other_replies")
        else:
            continue
        params = {
            "MessageSid": f"SMin{uuid.uuid4().hex[:28]}",
            "From": r.phone or "",
            "To": "RELANCE",
            "Body": body,
        }
        await driver.twilio("/webhooks/twilio/inbound", params)

    # 4. purchases, after the clicks that lead to them
    async def buy(r, tag: str, amount: int) -> None:
        payload = {
            "order_id": f"sim-{r.run_id}-{r.id}",
            "customer_id": r.customer_id,
            "amount_cents": amount,
            "ordered_at": datetime.now(UTC).isoformat(),
        }
        resp = await driver._send(
            "POST", "/events/conversions", json=payload, headers={"X-API-Key": driver.api_key}
        )
        resp.raise_for_status()
        driver.count(tag)

    await asyncio.gather(*(buy(r, tag, rng.randrange(1500, 15000, 10)) for r, tag in buyers))


def _buyers(rows: list, arrived: set[int], rng: random.Random, rates: Rates) -> tuple[list, set[int]]:
    """Who buys in the window, per customer of the run (the module doc's model).

    Returns (row, tag) per buyer, and the ids of the arrived messages whose link a buyer follows. Tags:
    "purchases" (treated, through the message: what attribution credits), "other_purchases" (treated,
    message not arrived or not followed) and "control_purchases". Held-out and treated customers draw
    ``organic`` alike; only a treated customer whose message arrived can get the ``lift``. Drawn for
    this run's customers: simulating two runs that share customers draws for each run.
    """
    by_customer: dict[int, list] = {}
    for r in rows:
        by_customer.setdefault(r.customer_id, []).append(r)
    buyers, via_link = [], set()
    for rows_ in by_customer.values():
        held_out = any(r.in_control or r.status == "held_out" for r in rows_)
        reached = [] if held_out else [r for r in rows_ if r.id in arrived]
        if rng.random() >= rates.organic + (rates.lift if reached else 0.0):
            continue
        if held_out:
            buyers.append((rows_[0], "control_purchases"))
        elif reached and rng.random() < rates.via_link:
            buyers.append((reached[0], "purchases"))
            via_link.add(reached[0].id)
        else:
            buyers.append(((reached or rows_)[0], "other_purchases"))
    return buyers, via_link


def _rows(engine: Engine, run_id: int) -> list:
    ledger, customer = LedgerEntry.__table__, Customer.__table__
    with engine.connect() as conn:
        return conn.execute(
            select(
                ledger.c.id,
                ledger.c.run_id,
                ledger.c.campaign,
                ledger.c.customer_id,
                ledger.c.channel,
                ledger.c.status,
                ledger.c.in_control,
                ledger.c.provider_message_id,
                ledger.c.sent_at,
                customer.c.email,
                customer.c.phone,
                customer.c.locale,
            )
            .join(customer, customer.c.id == ledger.c.customer_id)
            .where(ledger.c.run_id == run_id)
            .order_by(ledger.c.id)
        ).all()


async def asimulate_responses(
    run_id: int,
    target: Any = None,
    seed: int = 0,
    *,
    engine: Engine | None = None,
    sendgrid_private_key: Any = None,
    twilio_auth_token: str | None = None,
    conversions_api_key: str | None = None,
    rates: Rates | None = None,
) -> dict[str, int]:
    """The async form of ``simulate_responses``."""
    from core.db import get_engine

    settings = get_settings()
    engine = engine or get_engine()
    private = _load_key(sendgrid_private_key) if sendgrid_private_key is not None else None
    twilio_token = twilio_auth_token or (
        settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    )
    api_key = conversions_api_key or (
        settings.conversions_api_key.get_secret_value() if settings.conversions_api_key else None
    )
    if target is None:  # in process, with keys made for this simulation
        from tracking.app import create_app

        private, public = generate_sendgrid_keypair()
        twilio_token, api_key = "sim-" + uuid.uuid4().hex, "sim-" + uuid.uuid4().hex
        settings = settings.model_copy(
            update={
                "sendgrid_webhook_public_key": public,
                "twilio_auth_token": twilio_token,
                "conversions_api_key": api_key,
            }
        )
        target = create_app(settings, engine=engine)
    if private is None or not twilio_token or not api_key:
        raise ValueError(
            "simulate_responses needs sendgrid_private_key, twilio_auth_token and conversions_api_key "
            "matching the tracking server's settings (or target=None for an in-process server)"
        )
    if isinstance(target, str):  # the server must run with public_base_url = target (Twilio signs it)
        settings = settings.model_copy(update={"public_base_url": target.rstrip("/")})
        client = httpx.AsyncClient(base_url=target.rstrip("/"), timeout=30)
    else:
        if hasattr(target, "state") and hasattr(target.state, "settings"):
            settings = target.state.settings  # Twilio signs the URL that app believes is public
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url="http://tracking.test")
    driver = _Driver(client, settings, private, twilio_token, api_key)
    rng = random.Random(seed)
    async with client:
        await _simulate(driver, _rows(engine, run_id), rng, rates or Rates())
    return driver.counts


def simulate_responses(run_id: int, target: Any = None, seed: int = 0, **kw) -> dict[str, int]:
    """Drive plausible responses to run ``run_id`` through the endpoints; returns what was sent, by kind."""
    return asyncio.run(asimulate_responses(run_id, target, seed, **kw))
