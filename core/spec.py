"""The campaign language: what a marketer writes in campaigns/*.yaml.

These pydantic models are the one definition of a campaign that validate,
plan, preview, run and report all read, and the source of
campaigns/schema.json (``relance schema``) that editors use to complete and
check the YAML as it is typed. Loading a file with line numbers in its errors
lives in ``core.spec_loader``; checks that need other packages (segment,
template, field and feature names) live in ``relance.cli.validation.check_file``.

Every check that needs nothing but the file itself (cron syntax, time zone
names, an impossible sending window, duplicate variants...) is a validator
here, so that no command can load a campaign that could never run.

Why one module of ~470 lines: it is the campaign language's one schema, read top to bottom as a
campaign file is written, and the source of campaigns/schema.json.
"""

from __future__ import annotations

import difflib
from datetime import date, datetime, time
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

ChannelName = Literal["email", "sms", "push"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def _pad_hour(value: Any) -> Any:
    """Accept `9:30` as well as `09:30` (pydantic wants two digits)."""
    if isinstance(value, str) and len(value) >= 4 and value[1] == ":" and value[0].isdigit():
        return "0" + value
    return value


# Editors (yaml-language-server) check `format: time` / `date-time` more strictly than pydantic parses
# them (seconds, offsets required): these patterns accept what the loader accepts.
ClockTime = Annotated[
    time,
    BeforeValidator(_pad_hour),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?$",
            "examples": ["09:00", "20:30"],
        }
    ),
]
DateTime = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$",
            "examples": ["2026-12-01T09:30:00"],
        }
    ),
]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid")


def nearest(name: str, known: Any) -> str | None:
    """The closest known name to a typo, for "did you mean ...?" hints."""
    found = difflib.get_close_matches(name, [str(k) for k in known], n=1, cutoff=0.6)
    return found[0] if found else None


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_time_zone(name: str) -> str:
    """An IANA time zone name, or a ValueError naming the closest one."""
    try:
        ZoneInfo(name)
        return name
    except (ValueError, KeyError, OSError):
        pass
    close = nearest(name, _time_zones())
    hint = f"did you mean `{close}`?" if close else "write an IANA name such as Europe/Paris"
    raise ValueError(f"`{name}` is not a known time zone; {hint}")


def check_cron(expr: str) -> str:
    """A 5-field cron expression (minute hour day month weekday), checked with cronsim."""
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expr, datetime(2026, 1, 1))
    except CronSimError as exc:
        reason = str(exc).rstrip(".").lower() or "not valid"
        raise ValueError(
            f"cron `{expr}` is not valid ({reason}): write 5 fields `minute hour day month weekday`, "
            "e.g. '0 10 * * 2' for Tuesdays at 10:00"
        ) from None
    return expr


class Schedule(StrictModel):
    """Either a cron expression in a time zone, or a one-off date."""

    cron: str | None = Field(
        None,
        description="Cron expression `minute hour day month weekday`, e.g. '0 10 * * 2' (Tuesdays 10:00)",
    )
    timezone: str = Field("Europe/Paris", description="IANA time zone of `cron` and `at`, e.g. Europe/Paris")
    at: DateTime | None = Field(
        None, description="One-off send date and time, e.g. 2026-12-01T09:30:00 (local time in `timezone`)"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return check_time_zone(v)

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.cron is None) == (self.at is None):
            raise ValueError(
                "write either `cron:` (repeating) or `at:` (once) in schedule, not both and not neither"
            )
        return self


class ControlGroup(StrictModel):
    percent: float = Field(
        10.0, ge=0, le=90, description="Share of the audience held out (not sent), in %, to measure uplift"
    )


class Variant(StrictModel):
    name: str = Field(
        pattern=NAME_PATTERN,
        max_length=64,
        description="Variant name, e.g. offer-15 (lowercase, digits, - _)",
    )
    weight: float = Field(1.0, gt=0, description="Relative share of the audience, e.g. 1 and 1 for 50/50")
    message: str | None = Field(None, description="Template folder; defaults to the campaign's message")
    offer: dict[str, Any] = Field(default_factory=dict, description="Offer fields overriding the campaign's")


class ChannelStrategy(StrictModel):
    strategy: Literal["preferred", "all", "first_available", "best"] = Field(
        "preferred",
        description="preferred: the customer's preferred channel, else the first in `order` they can "
        "receive; first_available: the first in `order`; all: every channel in `order`; "
        "best: the `model` chooses",
    )
    order: list[ChannelName] = Field(
        default_factory=lambda: ["email", "sms", "push"], min_length=1, description="Channels, by preference"
    )
    model: str | None = Field(
        None, description="With strategy `best`: the model that chooses (default response)"
    )

    @field_validator("order")
    @classmethod
    def _no_repeat(cls, v: list[str]) -> list[str]:
        repeated = sorted({c for c in v if v.count(c) > 1})
        if repeated:
            raise ValueError(f"`{repeated[0]}` is listed twice in `order`: list each channel once")
        return v


class SendingWindow(StrictModel):
    """Hours and days (in each customer's time zone) when messages may go out."""

    start: ClockTime = Field(time(9, 0), description="Earliest local time, e.g. 09:00")
    end: ClockTime = Field(time(20, 0), description="Latest local time, e.g. 20:00 (after start, same day)")
    days: list[Weekday] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat"],
        description="Sending days: mon tue wed thu fri sat sun",
    )

    @field_validator("end")
    @classmethod
    def _after_start(cls, v: time, info: ValidationInfo) -> time:
        start = info.data.get("start")
        if start is not None and v <= start:
            raise ValueError(
                f"end {v:%H:%M} is not after start {start:%H:%M}: no message could ever be sent; "
                "write an end later the same day, e.g. start: 09:00 and end: 20:00"
            )
        return v

    @field_validator("days")
    @classmethod
    def _some_day(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(
                "no sending day: no message could ever be sent; write e.g. [mon, tue, wed, thu, fri]"
            )
        return v


class FrequencyCap(StrictModel):
    max_messages: int = Field(gt=0, description="At most this many messages in `days` days, e.g. 2")
    days: int = Field(gt=0, description="The period of `max_messages`, in days, e.g. 7")
    channel: ChannelName | None = Field(None, description="Only this channel (default: all channels)")


class Conversion(StrictModel):
    goal: Literal["purchase"] = "purchase"
    window_days: int = Field(
        7, gt=0, le=90, description="Days after the message during which a purchase counts"
    )
    attribution: Literal["click", "open", "receive"] = Field(
        "click",
        description="What ties a purchase to the message: a click (default), an open, or receiving it",
    )


OFFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Offer fields shared by every channel, read by templates as {{ offer.<name> }}",
    "properties": {
        "code": {"type": "string", "description": "Promo code, e.g. REVIENS15"},
        "discount_percent": {"type": "number", "description": "Discount in %, e.g. 15"},
        "price": {"type": "number", "description": "Price in euros, e.g. 29.9"},
        "url": {"type": "string", "description": "Landing page, e.g. https://maison.example/offre"},
    },
    "additionalProperties": True,
}


class Campaign(StrictModel):
    name: str = Field(
        pattern=NAME_PATTERN, max_length=100, description="Identifier: lowercase letters, digits, - and _"
    )
    description: str = ""
    owner: str | None = Field(None, description="Who to ask about this campaign, e.g. marie@maison.example")
    priority: int = Field(50, ge=0, le=100, description="Higher wins when campaigns compete for a customer")
    schedule: Schedule | None = None
    audience: Rule | None = Field(None, description="Who: rules, see campaigns/README.md (none = everyone)")
    control_group: ControlGroup = Field(default_factory=ControlGroup)
    message: str | None = Field(None, description="Template folder under templates/, e.g. winback/offer-15")
    variants: list[Variant] = Field(default_factory=list)
    offer: Annotated[dict[str, Any], WithJsonSchema(OFFER_SCHEMA)] = Field(default_factory=dict)
    channels: ChannelStrategy = Field(default_factory=ChannelStrategy)
    sending_window: SendingWindow | None = None
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    conversion: Conversion = Field(default_factory=Conversion)
    model_versions: dict[str, str] = Field(default_factory=dict, description="Pin model versions by name")

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, v: list[Variant]) -> list[Variant]:
        names = [x.name for x in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"two variants are named `{repeated[0]}`: give each variant its own name")
        return v

    @model_validator(mode="after")
    def _has_message(self) -> Campaign:
        if self.message is None and not self.variants:
            raise ValueError("write a `message:` (template folder) or `variants:` each with a message")
        if self.message is None and any(v.message is None for v in self.variants):
            raise ValueError("every variant needs a `message:` when the campaign has none")
        return self

    def effective_variants(self) -> list[Variant]:
        """The variants to assign, or one implicit variant named 'default'."""
        if self.variants:
            return [v if v.message else v.model_copy(update={"message": self.message}) for v in self.variants]
        return [Variant(name="default", weight=1.0, message=self.message)]


# --------------------------------------------------------------------------
# Audience rules. A rule is a mapping with exactly one subject key:
#   field / feature / interest / bought / campaign / segment / score / top /
#   target / all / any / not.  audiences.rules compiles them to SQL.
# The union is dispatched on that key (a callable discriminator), so that an
# error speaks about the one rule the marketer meant instead of listing why
# the mapping fails each of the twelve kinds.
# --------------------------------------------------------------------------

Scalar = str | int | float | bool | date


class Comparison(StrictModel):
    """Operators shared by `field:` and `feature:` rules (at least one must be given)."""

    eq: Scalar | None = Field(None, description="Equal to")
    ne: Scalar | None = Field(None, description="Not equal to")
    in_: list[Scalar] | None = Field(None, alias="in", description="One of a list")
    not_in: list[Scalar] | None = Field(None, description="None of a list")
    gt: float | date | None = Field(None, description="Greater than")
    gte: float | date | None = Field(None, description="Greater than or equal to")
    lt: float | date | None = Field(None, description="Less than")
    lte: float | date | None = Field(None, description="Less than or equal to")
    between: tuple[float, float] | tuple[date, date] | None = Field(
        None, description="[low, high], inclusive"
    )
    is_null: bool | None = Field(None, description="true: the value is unknown; false: it is known")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _some_operator(self) -> Comparison:
        operators = self.model_fields_set - {"field", "feature"}
        if not operators:
            raise ValueError("give an operator: eq, ne, in, not_in, gt, gte, lt, lte, between or is_null")
        return self


class FieldRule(Comparison):
    field: str = Field(description="A customer field: country, city, postcode, gender, age, locale...")


class FeatureRule(Comparison):
    feature: str = Field(description="A computed feature: recency_days, frequency, monetary, tenure_days...")


class InterestRule(StrictModel):
    interest: str | list[str] = Field(description="Interest tag(s); a list means any of them")


class Bought(StrictModel):
    category: str | list[str] | None = Field(None, description="Product category (or a list: any of them)")
    product: str | list[str] | None = Field(None, description="Product (or a list: any of them)")
    within_days: int | None = Field(None, gt=0, description="Only orders of the last N days")
    min_orders: int = Field(1, ge=1, description="At least this many matching orders")


class BoughtRule(StrictModel):
    bought: Bought


class PastCampaign(StrictModel):
    name: str = Field(description="The `name:` of a campaign")
    event: Literal["received", "opened", "clicked", "converted"] = "received"
    within_days: int | None = Field(None, gt=0)


class CampaignRule(StrictModel):
    campaign: PastCampaign


class SegmentRule(StrictModel):
    segment: str = Field(description="A named segment from audiences/segments.yaml")


class ScoreBound(StrictModel):
    model: str = Field(description="A trained model, e.g. churn")
    min: float | None = Field(None, ge=0, le=1)
    max: float | None = Field(None, ge=0, le=1)


class ScoreRule(StrictModel):
    score: ScoreBound


class TopBound(StrictModel):
    model: str = Field(description="A trained model, e.g. purchase")
    percent: float = Field(gt=0, le=100, description="The best N % of scored customers")


class TopRule(StrictModel):
    top: TopBound


class TargetRule(StrictModel):
    target: Literal["uplift"] = Field(description="uplift: customers the message is expected to move")


class AllRule(StrictModel):
    all: list[Rule] = Field(min_length=1, description="Every rule of the list (AND)")


class AnyRule(StrictModel):
    any: list[Rule] = Field(min_length=1, description="At least one rule of the list (OR)")


class NotRule(StrictModel):
    not_: Rule = Field(alias="not", description="Everyone the rule does not match")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# subject key -> rule model; the order is the one shown in messages
RULE_KINDS: dict[str, type[BaseModel]] = {
    "field": FieldRule,
    "feature": FeatureRule,
    "interest": InterestRule,
    "bought": BoughtRule,
    "campaign": CampaignRule,
    "segment": SegmentRule,
    "score": ScoreRule,
    "top": TopRule,
    "target": TargetRule,
    "all": AllRule,
    "any": AnyRule,
    "not": NotRule,
}
_KIND_OF_MODEL = {model: kind for kind, model in RULE_KINDS.items()}
RULE_TAG_SUFFIX = " rule"  # tags appear in pydantic error locations; the loader strips them
RULE_TAGS = frozenset(kind + RULE_TAG_SUFFIX for kind in RULE_KINDS)


def rule_kind(value: Any) -> str | None:
    """The tag of the rule kind a value is meant to be: its one subject key (None if not exactly one)."""
    if isinstance(value, BaseModel):
        kind = _KIND_OF_MODEL.get(type(value))
    elif isinstance(value, dict):
        keys = [k for k in value if k in RULE_KINDS]
        kind = keys[0] if len(keys) == 1 else None
    else:
        kind = None
    return None if kind is None else kind + RULE_TAG_SUFFIX


Rule = Annotated[
    Annotated[FieldRule, Tag("field rule")]
    | Annotated[FeatureRule, Tag("feature rule")]
    | Annotated[InterestRule, Tag("interest rule")]
    | Annotated[BoughtRule, Tag("bought rule")]
    | Annotated[CampaignRule, Tag("campaign rule")]
    | Annotated[SegmentRule, Tag("segment rule")]
    | Annotated[ScoreRule, Tag("score rule")]
    | Annotated[TopRule, Tag("top rule")]
    | Annotated[TargetRule, Tag("target rule")]
    | Annotated[AllRule, Tag("all rule")]
    | Annotated[AnyRule, Tag("any rule")]
    | Annotated[NotRule, Tag("not rule")],
    Discriminator(
        rule_kind,
        custom_error_type="rule_kind",
        custom_error_message="a rule is a mapping with exactly one of the keys " + ", ".join(RULE_KINDS),
    ),
]
for _model in (AllRule, AnyRule, NotRule):
    _model.model_rebuild()

Campaign.model_rebuild()


class Segment(StrictModel):
    """A named, reusable audience in audiences/segments.yaml."""

    description: str = ""
    rule: Rule = Field(description="Who belongs to the segment (same rules as a campaign's audience)")


class SegmentsFile(StrictModel):
    """The content of audiences/segments.yaml."""

    segments: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Segment] = Field(default_factory=dict)
