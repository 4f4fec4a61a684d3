"""Journeys: the `steps:` of a campaign file that follows each customer over days.

A journey is a campaign with ``steps:`` instead of one ``message:``. Customers
enter as a campaign's audience is selected (its schedule and rules); each then
moves through named steps: ``send`` a message, ``wait`` a duration or until a
local weekday and time, ``branch`` on a response to an earlier step or on an
audience rule, ``split`` at random (stable by hash), ``exit``. The graph is
explicit: ``next:`` names the following step and defaults to the next one in
the list; after the last step the customer has completed the journey.

Only what the file alone can tell is checked here (names unique, targets that
exist); the graph checks with positions (unreachable steps, cycles without a
wait, waits longer than the re-entry period...) are journeys.graph's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.spec_base import (
    NAME_PATTERN,
    OFFER_SCHEMA,
    ChannelStrategy,
    ClockTime,
    StrictModel,
    Variant,
    Weekday,
    effective_variants,
    unique_variants,
)
from core.spec_rules import Comparison, Rule

StepName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]

# What a branch may test about a message the customer got at an earlier step.
Response = Literal["delivered", "opened", "clicked", "converted", "unsubscribed", "bounced", "no_response"]


class SendAction(StrictModel):
    """What a `send` step sends: a message folder, the channel strategy, variants, offer."""

    message: str | None = Field(None, description="Template folder under templates/, e.g. winback/offer-15")
    variants: list[Variant] = Field(default_factory=list, description="Variants tested at this step")
    offer: Annotated[dict[str, Any], WithJsonSchema(OFFER_SCHEMA)] = Field(
        default_factory=dict, description="Offer fields for this step, over the journey's `offer:`"
    )
    channels: ChannelStrategy | None = Field(None, description="Channel strategy (default: the journey's)")
    max_delay_hours: int = Field(
        72,
        gt=0,
        le=24 * 30,
        description="A send held back by a frequency cap or a higher-priority campaign is tried again "
        "every hour for at most this long, then skipped (quiet hours always wait)",
    )

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, v: list[Variant]) -> list[Variant]:
        return unique_variants(v)

    @model_validator(mode="after")
    def _has_message(self) -> SendAction:
        if self.message is None and not self.variants:
            raise ValueError("write a `message:` (template folder) or `variants:` each with a message")
        if self.message is None and any(v.message is None for v in self.variants):
            raise ValueError("every variant needs a `message:` when the step has none")
        return self

    def effective_variants(self) -> list[Variant]:
        """The variants to assign, or one implicit variant named 'default'."""
        return effective_variants(self.variants, self.message)


class WaitAction(StrictModel):
    """Wait a duration, then (optionally) until a local time and weekday, in the customer's zone."""

    days: int = Field(0, ge=0, le=365, description="Days to wait, e.g. 3")
    hours: int = Field(0, ge=0, le=24 * 365, description="Hours to wait, e.g. 4")
    minutes: int = Field(0, ge=0, le=60 * 24 * 365, description="Minutes to wait, e.g. 30")
    time: ClockTime | None = Field(
        None, description="Then until this local time (customer's time zone), e.g. 10:00"
    )
    weekdays: list[Weekday] | None = Field(
        None, min_length=1, description="Then until one of these days (customer's time zone), e.g. [mon]"
    )

    @model_validator(mode="after")
    def _waits(self) -> WaitAction:
        if not (self.days or self.hours or self.minutes or self.time or self.weekdays):
            raise ValueError("write how long to wait: days, hours, minutes, and/or a `time` / `weekdays`")
        return self

    @property
    def duration(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes)

    def longest(self) -> timedelta:
        """The longest this wait can last (duration, then up to a week for a weekday and time)."""
        extra = timedelta(days=7) if self.weekdays else timedelta(days=1) if self.time else timedelta(0)
        return self.duration + extra


class BranchTest(StrictModel):
    """A customer's response to an earlier send step of this entry, or an audience rule now."""

    step: StepName | None = Field(None, description="An earlier `send` step of this journey")
    response: Response | None = Field(
        None,
        description="delivered, opened, clicked, converted, unsubscribed, bounced, or no_response "
        "(neither opened, clicked nor converted)",
    )
    within_hours: int | None = Field(
        None,
        gt=0,
        description="Only a response within N hours of the send (no_response: none within N hours)",
    )
    audience: Rule | None = Field(None, description="Or an audience rule, evaluated at the branch")

    @model_validator(mode="after")
    def _one_test(self) -> BranchTest:
        by_response = self.step is not None or self.response is not None
        if by_response and self.audience is not None:
            raise ValueError("test either a response (`step` + `response`) or an `audience` rule, not both")
        if not by_response and self.audience is None:
            raise ValueError("write `step:` and `response:` (e.g. opened), or an `audience:` rule")
        if by_response and (self.step is None or self.response is None):
            raise ValueError("a response test needs both `step:` (an earlier send step) and `response:`")
        if self.within_hours is not None and not by_response:
            raise ValueError("`within_hours` applies to a response test (`step` + `response`)")
        return self


class BranchAction(StrictModel):
    if_: BranchTest = Field(alias="if", description="The test")
    then: StepName = Field(description="The step when the test holds")
    else_: StepName = Field(alias="else", description="The step otherwise")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SplitPath(StrictModel):
    percent: float = Field(gt=0, le=100, description="Share of the customers reaching the split, in %")
    next: StepName = Field(description="The step of this path")


class SendStep(StrictModel):
    name: StepName = Field(description="The step's name: customers stay on steps by name across edits")
    send: SendAction
    next: StepName | None = Field(None, description="The following step (default: the next one listed)")


class WaitStep(StrictModel):
    name: StepName = Field(description="The step's name: customers stay on steps by name across edits")
    wait: WaitAction
    next: StepName | None = Field(None, description="The following step (default: the next one listed)")


class BranchStep(StrictModel):
    name: StepName = Field(description="The step's name: customers stay on steps by name across edits")
    branch: BranchAction


class SplitStep(StrictModel):
    name: StepName = Field(description="The step's name: customers stay on steps by name across edits")
    split: list[SplitPath] = Field(min_length=2, description="Paths whose percents add up to 100")

    @field_validator("split")
    @classmethod
    def _hundred(cls, v: list[SplitPath]) -> list[SplitPath]:
        total = sum(p.percent for p in v)
        if abs(total - 100) > 1e-6:
            raise ValueError(f"the percents of a split add up to {total:g}, not 100")
        return v


class ExitStep(StrictModel):
    name: StepName = Field(description="The step's name")
    exit: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)] = Field(
        description="Why the customer leaves here, shown in status and reports, e.g. completed"
    )


STEP_KINDS: dict[str, type[BaseModel]] = {
    "send": SendStep,
    "wait": WaitStep,
    "branch": BranchStep,
    "split": SplitStep,
    "exit": ExitStep,
}
_KIND_OF_STEP = {model: kind for kind, model in STEP_KINDS.items()}
STEP_TAG_SUFFIX = " step"
STEP_TAGS = frozenset(kind + STEP_TAG_SUFFIX for kind in STEP_KINDS)


def step_kind(value: Any) -> str | None:
    """The tag of the step kind a value is meant to be: its one action key (None if not exactly one)."""
    if isinstance(value, BaseModel):
        kind = _KIND_OF_STEP.get(type(value))
    elif isinstance(value, dict):
        keys = [k for k in value if k in STEP_KINDS]
        kind = keys[0] if len(keys) == 1 else None
    else:
        kind = None
    return None if kind is None else kind + STEP_TAG_SUFFIX


Step = Annotated[
    Annotated[SendStep, Tag("send step")]
    | Annotated[WaitStep, Tag("wait step")]
    | Annotated[BranchStep, Tag("branch step")]
    | Annotated[SplitStep, Tag("split step")]
    | Annotated[ExitStep, Tag("exit step")],
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step has a `name:` and exactly one of the keys " + ", ".join(STEP_KINDS),
    ),
]


def kind_of(step: Any) -> str:
    """``send``, ``wait``, ``branch``, ``split`` or ``exit``."""
    return _KIND_OF_STEP[type(step)]


class Reentry(StrictModel):
    """May a customer enter again after leaving? Never (`once`) or at most every N days."""

    every_days: int | None = Field(
        None, gt=0, description="At most one entry per customer every N days (default: only once)"
    )


def _reentry(value: Any) -> Any:
    """Accept `reentry: once` as well as `reentry: {every_days: 30}`."""
    if value == "once":
        return {}
    return value


ReentryRule = Annotated[
    Reentry,
    BeforeValidator(_reentry),
    WithJsonSchema(
        {
            "description": "`once` (default): a customer enters at most once; or {every_days: N}",
            "anyOf": [
                {"const": "once"},
                {
                    "type": "object",
                    "properties": {"every_days": {"type": "integer", "exclusiveMinimum": 0}},
                    "additionalProperties": False,
                },
            ],
        }
    ),
]


DURATION_PATTERN = r"^\s*(\d+\s*[dhm]\s*)+$"


def parse_duration(text: str) -> timedelta:
    """``1h``, ``30m``, ``2d``, ``1d 12h`` as a timedelta (DURATION_PATTERN is checked first)."""
    import re

    units = {"d": "days", "h": "hours", "m": "minutes"}
    total = timedelta(0)
    for number, unit in re.findall(r"(\d+)\s*([dhm])", text):
        total += timedelta(**{units[unit]: int(number)})
    return total


class EventEntry(StrictModel):
    """Enter the journey on a customer event (audiences/events.yaml or a built-in one), per event."""

    event: str = Field(description="The event type that starts the journey, e.g. cart_abandoned")
    where: dict[str, Comparison] = Field(
        default_factory=dict,
        description="Property -> comparisons the event must meet, e.g. {cart_value: {gte: 50}}",
    )
    delay: str = Field(
        "0m",
        pattern=DURATION_PATTERN,
        description="How long after the event the first step acts, e.g. 1h, 30m, 2d, 1d 12h",
    )

    @property
    def delay_time(self) -> timedelta:
        return parse_duration(self.delay)


class ExitWhen(StrictModel):
    """When a customer leaves the journey early, checked before each of their steps acts."""

    converted: bool = Field(True, description="A purchase after entering (the goal) ends the journey")
    consent_withdrawn: bool = Field(
        True, description="No consented, unsuppressed channel left among the journey's channels"
    )
    left_segment: str | None = Field(
        None, description="A segment (audiences/segments.yaml) the customer left"
    )
    left_audience: bool = Field(False, description="The customer no longer matches the journey's `audience:`")
    event: str | None = Field(None, description="An event after entering ends the journey, e.g. order_placed")


def next_of(steps: list[Any], index: int) -> list[str]:
    """The names of the steps a step leads to (a step without `next:` leads to the following one)."""
    step = steps[index]
    kind = kind_of(step)
    if kind == "exit":
        return []
    if kind == "branch":
        return [step.branch.then, step.branch.else_]
    if kind == "split":
        return [p.next for p in step.split]
    if step.next is not None:
        return [step.next]
    return [steps[index + 1].name] if index + 1 < len(steps) else []
