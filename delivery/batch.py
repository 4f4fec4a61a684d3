"""Loading a batch: its planned rows with customer, features, device and recommendations in ONE query.

Consent and suppression are read again here, at send time: a customer may unsubscribe, bounce or
reply STOP between the recording of the audience and their batch (hours, for a paused run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from core.models import (
    Consent,
    Customer,
    CustomerFeatures,
    Device,
    LedgerEntry,
    Recommendation,
    Status,
    Suppression,
)

log = logging.getLogger(__name__)


LEDGER = LedgerEntry.__table__
CUSTOMERS = Customer.__table__
FEATURES = CustomerFeatures.__table__
DEVICES = Device.__table__
RECOS = Recommendation.__table__
CONSENT = Consent.__table__
SUPPRESSION = Suppression.__table__

# Customer fields a template may read; identifiers of the base stay out of messages.
CUSTOMER_FIELDS = (
    "id", "external_id", "first_name", "last_name", "email", "phone", "locale", "timezone",
    "country", "city", "postcode", "gender", "birth_year", "signup_date", "preferred_channel",
    "preferred_payment_method",
)  # fmt: skip
FEATURE_FIELDS = (
    "first_order_at", "last_order_at", "recency_days", "frequency", "monetary_cents",
    "avg_basket_cents", "tenure_days", "favourite_category", "preferred_payment_method",
)  # fmt: skip
ADDRESS_FIELD = {"email": "email", "sms": "phone", "push": "device_token"}


@dataclass
class Recipient:
    """One planned ledger row with what its message needs."""

    ledger_id: int
    customer_id: int
    channel: str
    variant: str | None
    message: str | None
    customer: dict[str, Any]
    features: dict[str, Any]
    device_token: str | None
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    blocked: str | None = None  # why it may no longer be sent (consent, suppression, erasure)

    @property
    def address(self) -> str | None:
        key = ADDRESS_FIELD[self.channel]
        return self.device_token if key == "device_token" else self.customer.get(key)


def load_batch(conn: Connection, run_id: int, batch: int) -> list[Recipient]:
    """The planned rows of one batch joined with customer, features, device and recommendations.

    ONE query: recommendations are a LEFT JOIN (a row per rank), folded here,
    so a batch costs one round trip whatever its size.
    """
    device = (
        select(DEVICES.c.token)
        .where(DEVICES.c.customer_id == LEDGER.c.customer_id, DEVICES.c.active.is_(True))
        .order_by(DEVICES.c.last_seen_at.desc(), DEVICES.c.id.desc())
        .limit(1)
        .correlate(LEDGER)
        .scalar_subquery()
    )
    # consent and suppression again at send time: a customer may unsubscribe, bounce or reply STOP
    # between the recording of the audience and their batch (hours, for a paused run)
    consent_ok = (
        select(CONSENT.c.customer_id)
        .where(
            CONSENT.c.customer_id == LEDGER.c.customer_id,
            CONSENT.c.channel == LEDGER.c.channel,
            CONSENT.c.status == "granted",
        )
        .correlate(LEDGER)
        .exists()
    )
    suppressed = (
        select(SUPPRESSION.c.id)
        .where(
            SUPPRESSION.c.channel.in_([LEDGER.c.channel, "*"]),
            SUPPRESSION.c.address.in_([CUSTOMERS.c.email, CUSTOMERS.c.phone]),
        )
        .correlate(LEDGER, CUSTOMERS)
        .exists()
    )
    cols = [
        consent_ok.label("consent_ok"),
        suppressed.label("suppressed"),
        CUSTOMERS.c.erased_at.label("erased_at"),
        LEDGER.c.id.label("ledger_id"),
        LEDGER.c.channel,
        LEDGER.c.variant,
        LEDGER.c.message,
        device.label("device_token"),
        *[CUSTOMERS.c[f].label(f"c_{f}") for f in CUSTOMER_FIELDS],
        *[FEATURES.c[f].label(f"f_{f}") for f in FEATURE_FIELDS],
        FEATURES.c.customer_id.label("f_present"),
        RECOS.c.rank.label("r_rank"),
        RECOS.c.item.label("r_item"),
        RECOS.c.score.label("r_score"),
    ]
    stmt = (
        select(*cols)
        .select_from(
            LEDGER.join(CUSTOMERS, CUSTOMERS.c.id == LEDGER.c.customer_id)
            .outerjoin(FEATURES, FEATURES.c.customer_id == LEDGER.c.customer_id)
            .outerjoin(RECOS, RECOS.c.customer_id == LEDGER.c.customer_id)
        )
        .where(LEDGER.c.run_id == run_id, LEDGER.c.batch == batch, LEDGER.c.status == str(Status.planned))
        .order_by(LEDGER.c.id, RECOS.c.rank)
    )
    out: dict[int, Recipient] = {}
    for row in conn.execute(stmt).mappings():
        rec = out.get(row["ledger_id"])
        if rec is None:
            rec = out[row["ledger_id"]] = Recipient(
                ledger_id=row["ledger_id"],
                customer_id=row["c_id"],
                channel=row["channel"],
                variant=row["variant"],
                message=row["message"],
                customer={f: row[f"c_{f}"] for f in CUSTOMER_FIELDS},
                features={f: row[f"f_{f}"] for f in FEATURE_FIELDS} if row["f_present"] is not None else {},
                device_token=row["device_token"],
                blocked=(
                    "customer erased"
                    if row["erased_at"] is not None
                    else "consent withdrawn after the audience was recorded"
                    if not row["consent_ok"]
                    else "address suppressed after the audience was recorded"
                    if row["suppressed"]
                    else None
                ),  # fmt: skip
            )
        if row["r_item"] is not None:
            rec.recommendations.append(
                {"rank": row["r_rank"], "item": row["r_item"], "score": row["r_score"]}
            )
    return list(out.values())
