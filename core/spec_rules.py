"""Audience rules: the mappings a marketer writes under `audience:`, `segments.yaml` and branches.

A rule is a mapping with exactly one subject key (field / feature / interest / bought /
event / campaign / segment / score / top / target / all / any / not); audiences.rules compiles
them to SQL. The union is dispatched on that key (a callable discriminator), so that an
error speaks about the one rule the marketer meant instead of listing why the mapping
fails each of the thirteen kinds.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from core.spec_base import NAME_PATTERN, StrictModel

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


class EventCondition(StrictModel):
    """Did an event (with property conditions) at least / at most N times, optionally in the last D days."""

    name: str = Field(description="An event type: built-in (order_placed...) or from audiences/events.yaml")
    where: dict[str, Comparison] = Field(
        default_factory=dict, description="Property -> comparisons (eq, in, gte...); every one must hold"
    )
    min_count: int = Field(
        1, ge=0, description="At least this many matching events (default 1; 0 when only max_count is given)"
    )
    max_count: int | None = Field(None, ge=0, description="At most this many matching events (0: never)")
    within_days: int | None = Field(None, gt=0, description="Only events of the last N days (default: ever)")

    @model_validator(mode="after")
    def _counts(self) -> EventCondition:
        # `max_count: 2` alone reads "at most twice", zero included; `max_count: 0` alone is "never"
        if "min_count" not in self.model_fields_set and self.max_count is not None:
            self.min_count = 0
        if self.max_count is not None and self.max_count < self.min_count:
            raise ValueError(
                f"`max_count: {self.max_count}` is below `min_count: {self.min_count}`: no customer can "
                f"match; write a max_count of {self.min_count} or more (or remove min_count: `max_count` "
                f"alone means at most that many times, `max_count: 0` never)"
            )
        if self.min_count == 0 and self.max_count is None:
            raise ValueError(
                "`min_count: 0` without `max_count` matches every customer; for customers who never did "
                "the event write `max_count: 0`"
            )
        return self


class EventRule(StrictModel):
    event: EventCondition


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
    "event": EventRule,
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
    | Annotated[EventRule, Tag("event rule")]
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


class Segment(StrictModel):
    """A named, reusable audience in audiences/segments.yaml."""

    description: str = ""
    rule: Rule = Field(description="Who belongs to the segment (same rules as a campaign's audience)")


class SegmentsFile(StrictModel):
    """The content of audiences/segments.yaml."""

    segments: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Segment] = Field(default_factory=dict)
