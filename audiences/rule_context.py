"""What every part of the rule compiler shares: the tables, the names a rule may use, its errors, its context.

The lowest module of the rule compiler: audiences.comparisons, audiences.score_rules,
audiences.segments and audiences.rules import it, and it imports none of them
(issue 23: the segment book and the model registry no longer sit in an import
circle with the compiler).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, FromClause

from core.models import (
    Customer,
    CustomerFeatures,
    CustomerInterest,
    CustomerScore,
    LedgerEntry,
    Order,
    ScoreVersion,
)

CUSTOMER = Customer.__table__
INTERESTS = CustomerInterest.__table__
ORDERS = Order.__table__
LEDGER = LedgerEntry.__table__
SCORES = CustomerScore.__table__
VERSIONS = ScoreVersion.__table__
FEATURES_TABLE = CustomerFeatures.__table__


@dataclass(frozen=True)
class Attribute:
    """A name a rule may use: the column it reads and what it means (shown by validate/schema)."""

    column: str
    description: str
    kind: str = "text"  # text, number, date, days, money


CUSTOMER_FIELDS: dict[str, Attribute] = {
    "country": Attribute("country", "ISO country code, e.g. FR, BE, RE"),
    "city": Attribute("city", "City name as imported"),
    "postcode": Attribute("postcode", "Post code, e.g. 75011"),
    "gender": Attribute("gender", "F, M or X"),
    "locale": Attribute("locale", "Locale, e.g. fr_FR"),
    "timezone": Attribute("timezone", "IANA time zone, e.g. Europe/Paris, Indian/Reunion"),
    "birth_year": Attribute("birth_year", "Year of birth", "number"),
    "age": Attribute("birth_year", "Age in years this year (derived from birth_year)", "age"),
    "signup_date": Attribute("signup_date", "Date of signup (YYYY-MM-DD)", "date"),
    "preferred_channel": Attribute("preferred_channel", "email, sms or push"),
    "preferred_payment_method": Attribute("preferred_payment_method", "Declared payment method"),
    "external_id": Attribute("external_id", "The customer id of the shop"),
}

FEATURES_INFO: dict[str, Attribute] = {
    "recency_days": Attribute("last_order_at", "Days since the last order (none without orders)", "days"),
    "frequency": Attribute("frequency", "Number of orders", "number"),
    "monetary": Attribute("monetary_cents", "Total spent, in euros", "money"),
    "avg_basket": Attribute("avg_basket_cents", "Average order, in euros", "money"),
    "tenure_days": Attribute("signup_date", "Days since signup (or first order)", "tenure"),
    "favourite_category": Attribute("favourite_category", "Category ordered most often"),
    "preferred_payment_method": Attribute("preferred_payment_method", "Payment method used most often"),
}
FEATURES = FEATURES_INFO  # the name B1's validator imports

# Ledger statuses that prove each level of response of a past campaign (statuses only move forward).
CAMPAIGN_EVENT_STATUSES: dict[str, tuple[str, ...]] = {
    "received": ("sent", "delivered", "opened", "clicked", "converted"),
    "opened": ("opened", "clicked", "converted"),
    "clicked": ("clicked", "converted"),
    "converted": ("converted",),
}


class RuleError(ValueError):
    """A rule that cannot be compiled; the message says what to write instead."""


@dataclass
class RuleContext:
    """What compiling needs: the reference time, named segments, pinned model versions, a connection."""

    now: datetime
    segments: Any = None  # Mapping name -> Rule, or B1's SegmentBook (``.get(name)``); None = load the file
    model_versions: Mapping[str, str] = field(default_factory=dict)
    bind: Engine | Connection | None = None  # only `score`/`top`/`target` rules query (model versions)
    uses_features: bool = False
    models_used: dict[str, str] = field(default_factory=dict)  # model -> version, for campaign_run.models
    _segment_stack: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        self.now = self.now.astimezone(UTC)

    @property
    def today(self) -> date:
        return self.now.date()


def suggest(name: str, known: Mapping[str, Any], what: str) -> RuleError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else f"; known: {', '.join(sorted(known))}"
    return RuleError(f"unknown {what} `{name}`{hint}")


def from_clause(ctx: RuleContext) -> FromClause:
    """``customer`` LEFT JOIN ``customer_features`` when a feature rule needs it."""
    if ctx.uses_features:
        return CUSTOMER.outerjoin(FEATURES_TABLE, FEATURES_TABLE.c.customer_id == CUSTOMER.c.id)
    return CUSTOMER


def bind_connect(ctx: RuleContext) -> AbstractContextManager[Connection]:
    """A connection for the few rules that query: the context's own, or a new one of its engine."""
    from core.db import get_engine

    if isinstance(ctx.bind, Connection):
        return nullcontext(ctx.bind)
    return (ctx.bind or get_engine()).connect()
