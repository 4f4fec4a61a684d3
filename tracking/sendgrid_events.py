"""SendGrid Event Webhook: signature check and mapping to normalized events.

The signature is checked with the sendgrid library's own ``EventWebhook``
helper (ECDSA P-256 over timestamp + raw body). A timestamp further than
``MAX_SKEW`` from now is refused as a replay even if correctly signed.
Events are tied to the ledger by the ``ledger_id`` custom arg that the
sendgrid provider sends (SendGrid copies custom args into every event).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook

from core.models import utcnow
from tracking.events import NormalizedEvent

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_SKEW = 600  # seconds: older (or further in the future) is a replay


class BadSignature(Exception):
    """Refused with 403: the body was not signed by SendGrid's key, or too long ago."""


class Verifier:
    """Holds the parsed public key, so each request only pays for the ECDSA verify."""

    def __init__(self, public_key: str | None, max_skew: int = MAX_SKEW) -> None:
        self._helper = EventWebhook(public_key) if public_key else None
        self.max_skew = max_skew

    def check(
        self, body: bytes, signature: str | None, timestamp: str | None, now: float | None = None
    ) -> None:
        if self._helper is None:
            raise BadSignature(
                "no SendGrid verification key configured (RELANCE_SENDGRID_WEBHOOK_PUBLIC_KEY)"
            )
        if not signature or not timestamp:
            raise BadSignature("missing signature headers")
        try:
            stamp = int(timestamp)
        except ValueError as exc:
            raise BadSignature("malformed timestamp") from exc
        if abs((now or time.time()) - stamp) > self.max_skew:
            raise BadSignature("stale timestamp (replay?)")
        try:
            ok = self._helper.verify_signature(body.decode("utf-8"), signature, timestamp)
        except Exception as exc:  # noqa: BLE001 - malformed base64/DER or body: all mean "not SendGrid"
            raise BadSignature("malformed signature") from exc
        if not ok:
            raise BadSignature("invalid signature")


def _ledger_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _occurred(event: dict) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError):
        return utcnow()


# SendGrid drops mail to addresses on its own suppression lists: mirror them in ours.
_DROP_SUPPRESSION = {
    "Bounced Address": "hard_bounce",
    "Spam Reporting Address": "complaint",
    "Unsubscribed Address": "unsubscribed",
    "Invalid": "invalid",
}


def normalize(event: dict) -> NormalizedEvent:
    """One SendGrid event -> one normalized event (unknown kinds are kept as they are)."""
    kind = str(event.get("event", "unknown"))
    reason = event.get("reason") or event.get("response")
    ev = NormalizedEvent(
        type=kind,
        provider="sendgrid",
        provider_event_id=event.get("sg_event_id"),
        occurred_at=_occurred(event),
        ledger_id=_ledger_id(event.get("ledger_id")),
        # "<X-Message-Id>.filter...": the id our provider stored; it settles a row left unknown
        provider_message_id=str(event["sg_message_id"]).split(".filter")[0]
        if event.get("sg_message_id")
        else None,
        channel="email",
        address=(event.get("email") or "").strip().lower() or None,
        raw=event,
    )
    if kind == "bounce":
        # type "bounce" = permanent (hard); "blocked" = refused this time (soft)
        ev.type, ev.subtype = "bounced", "soft" if event.get("type") == "blocked" else "hard"
        ev.reason = f"{ev.subtype} bounce: {reason}" if reason else f"{ev.subtype} bounce"
    elif kind == "dropped":
        ev.type, ev.subtype = "failed", "dropped"
        ev.reason = f"dropped: {reason}" if reason else "dropped"
        ev.suppress_reason = _DROP_SUPPRESSION.get(str(event.get("reason")))
    elif kind == "open":
        ev.type, ev.machine = "opened", bool(event.get("sg_machine_open"))
    elif kind == "click":
        ev.type, ev.url = "clicked", event.get("url")
    elif kind == "spamreport":
        ev.type = "complained"
    elif kind in ("unsubscribe", "group_unsubscribe"):
        ev.type = "unsubscribed"
        ev.subtype = "group" if kind == "group_unsubscribe" else None
    elif kind == "group_resubscribe":
        ev.type, ev.subtype, ev.restore = "resubscribed", "group", True
    elif kind in ("delivered", "deferred", "processed"):
        ev.subtype = str(event.get("attempt")) if kind == "deferred" and event.get("attempt") else None
    if ev.provider_event_id is None:  # should not happen; a stable id keeps duplicates out anyway
        ev.provider_event_id = "h:" + hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    return ev


def parse_batch(body: bytes) -> list[NormalizedEvent]:
    """The batch body -> events; raises ValueError when it is not a JSON list of objects."""
    data = json.loads(body)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("a SendGrid event batch is a JSON list of objects")
    return [normalize(item) for item in data]
