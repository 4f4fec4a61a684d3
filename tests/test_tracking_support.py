"""Shared helpers for the tracking tests (no tests here): data seeding and provider signing.

Signatures are made the providers' way, independently of the product code:
SendGrid's ECDSA P-256 with the cryptography package, Twilio's with its
RequestValidator.compute_signature.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from twilio.request_validator import RequestValidator

from core.models import CampaignRun, Customer, Event, LedgerEntry

TWILIO_TOKEN = "twilio-test-token"
API_KEY = "conversions-test-key"


@dataclass
class Keys:
    private: ec.EllipticCurvePrivateKey
    public_b64: str


def make_keys() -> Keys:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(private, base64.b64encode(der).decode())


def sendgrid_headers(keys: Keys, body: bytes, timestamp: int | None = None) -> dict:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    sig = keys.private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def twilio_headers(url: str, params: dict, token: str = TWILIO_TOKEN) -> dict:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def sg_event(kind: str, ledger_id: int | None, **extra) -> dict:
    event = {
        "event": kind,
        "email": "someone@example.com",
        "timestamp": int(time.time()),
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "msg.1",
        **extra,
    }
    if ledger_id is not None:
        event["ledger_id"] = str(ledger_id)
    return event


def client_for(settings, keys: Keys, **overrides) -> TestClient:
    from tracking.app import create_app

    values = {
        "sendgrid_webhook_public_key": keys.public_b64,
        "twilio_auth_token": TWILIO_TOKEN,
        "conversions_api_key": API_KEY,
        **overrides,
    }
    return TestClient(create_app(settings.model_copy(update=values)))


def post_sendgrid(client: TestClient, keys: Keys, events: list[dict], timestamp: int | None = None):
    body = json.dumps(events).encode()
    return client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(keys, body, timestamp))


@dataclass
class World:
    run_id: int
    ledger_ids: list[int]
    customer_ids: list[int]


def seed(
    engine: Engine,
    n: int = 3,
    channel: str = "email",
    campaign: str = "winback",
    control: tuple[int, ...] = (),
    sent_at: datetime | None = None,
    locales: tuple[str, ...] = ("fr_FR",),
    key: str | None = None,
    provider_message_ids: bool = False,
) -> World:
    """One run, ``n`` customers each with one ledger row (indices in ``control`` held out)."""
    sent_at = sent_at or datetime.now(UTC) - timedelta(minutes=5)
    tag = uuid.uuid4().hex[:8]
    with engine.begin() as conn:
        run_id = conn.execute(
            CampaignRun.__table__.insert().values(
                key=key or f"{campaign}:{tag}", campaign=campaign, status="running", started_at=sent_at
            )
        ).inserted_primary_key[0]
        customer_ids, ledger_ids = [], []
        for i in range(n):
            cid = conn.execute(
                Customer.__table__.insert().values(
                    external_id=f"c-{tag}-{i}",
                    email=f"c{i}-{tag}@example.com",
                    phone=f"+336{int(tag, 16) % 10**6:06d}{i:02d}",
                    locale=locales[i % len(locales)],
                )
            ).inserted_primary_key[0]
            held = i in control
            lid = conn.execute(
                LedgerEntry.__table__.insert().values(
                    run_id=run_id,
                    campaign=campaign,
                    customer_id=cid,
                    channel=channel,
                    in_control=held,
                    status="held_out" if held else "sent",
                    provider="twilio" if channel == "sms" else "sendgrid",
                    provider_message_id=f"SM{tag}{i:04d}" if provider_message_ids and not held else None,
                    sent_at=None if held else sent_at,
                    created_at=sent_at,
                )
            ).inserted_primary_key[0]
            customer_ids.append(cid)
            ledger_ids.append(lid)
    return World(run_id, ledger_ids, customer_ids)


def sent_sms(engine: Engine, run_id: int, campaign: str, customer_id: int, at: datetime) -> int:
    """One more sent ledger row (an SMS) for a customer already seeded: a second message to them."""
    with engine.begin() as conn:
        return conn.execute(
            LedgerEntry.__table__.insert().values(
                run_id=run_id,
                campaign=campaign,
                customer_id=customer_id,
                channel="sms",
                status="sent",
                sent_at=at,
                created_at=at,
            )
        ).inserted_primary_key[0]


def status_of(engine: Engine, ledger_id: int) -> str:
    with engine.connect() as conn:
        table = LedgerEntry.__table__
        return conn.execute(select(table.c.status).where(table.c.id == ledger_id)).scalar_one()


def events_of(engine: Engine, **where) -> list:
    table = Event.__table__
    with engine.connect() as conn:
        stmt = select(table).order_by(table.c.id)
        for column, value in where.items():
            stmt = stmt.where(table.c[column] == value)
        return conn.execute(stmt).all()
