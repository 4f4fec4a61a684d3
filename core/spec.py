"""The campaign language: what a marketer writes in campaigns/*.yaml.

These pydantic models are the one definition of a campaign that validate,
plan, preview, run and report all read, and the source of
campaigns/schema.json (``relance schema``) that editors use to complete and
check the YAML as it is typed. A campaign sends one `message:` per run; a
journey (a campaign with `steps:`) follows each customer over days.

The parts live in three modules, re-exported here so that callers import the
language from one place: core.spec_base (names, times, schedules, channels,
offers), core.spec_rules (audience rules and segments), core.spec_steps (journey
steps). Loading a file with line numbers in its errors lives in
``core.spec_loader``; checks that need other packages (segment, template, field
and feature names, the journey graph) live in ``relance.cli.validation``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from core.spec_base import (
    NAME_PATTERN,
    OFFER_SCHEMA,
    WEEKDAYS,
    ChannelName,
    ChannelStrategy,
    ClockTime,
    ControlGroup,
    Conversion,
    DateTime,
    FrequencyCap,
    Schedule,
    SendingWindow,
    StrictModel,
    Variant,
    Weekday,
    check_cron,
    check_time_zone,
    effective_variants,
    first_repeated,
    nearest,
    unique_variants,
)
from core.spec_rules import (
    RULE_KINDS,
    RULE_TAG_SUFFIX,
    RULE_TAGS,
    AllRule,
    AnyRule,
    Bought,
    BoughtRule,
    CampaignRule,
    Comparison,
    FeatureRule,
    FieldRule,
    InterestRule,
    NotRule,
    PastCampaign,
    Rule,
    ScoreBound,
    ScoreRule,
    Segment,
    SegmentRule,
    SegmentsFile,
    TargetRule,
    TopBound,
    TopRule,
    rule_kind,
)
from core.spec_steps import STEP_KINDS, STEP_TAGS, EventEntry, ExitWhen, ReentryRule, Step, kind_of, step_kind

__all__ = [
    "NAME_PATTERN",
    "OFFER_SCHEMA",
    "WEEKDAYS",
    "ChannelName",
    "ChannelStrategy",
    "ClockTime",
    "Conversion",
    "ControlGroup",
    "DateTime",
    "FrequencyCap",
    "Schedule",
    "SendingWindow",
    "StrictModel",
    "Variant",
    "Weekday",
    "check_cron",
    "check_time_zone",
    "nearest",
    "RULE_KINDS",
    "RULE_TAG_SUFFIX",
    "RULE_TAGS",
    "AllRule",
    "AnyRule",
    "Bought",
    "BoughtRule",
    "CampaignRule",
    "Comparison",
    "FeatureRule",
    "FieldRule",
    "InterestRule",
    "NotRule",
    "PastCampaign",
    "Rule",
    "ScoreBound",
    "ScoreRule",
    "Segment",
    "SegmentRule",
    "SegmentsFile",
    "TargetRule",
    "TopBound",
    "TopRule",
    "rule_kind",
    "STEP_KINDS",
    "STEP_TAGS",
    "ExitWhen",
    "Step",
    "kind_of",
    "step_kind",
    "Campaign",
]


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
    steps: list[Step] | None = Field(
        None,
        min_length=1,
        description="A journey: named steps instead of one `message:` (campaigns/README.md)",
    )
    reentry: ReentryRule | None = Field(
        None, description="Journeys: `once` (default) or {every_days: N}: when a customer may enter again"
    )
    exit_when: ExitWhen | None = Field(None, description="Journeys: when a customer leaves early")
    entry: EventEntry | None = Field(
        None, description="Journeys: enter on a customer event instead of (or beside) the schedule"
    )
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
        return unique_variants(v)

    @model_validator(mode="after")
    def _has_message(self) -> Campaign:
        if self.steps is not None:
            if self.message is not None or self.variants:
                raise ValueError(
                    "a journey sends from its `send` steps: move `message:` / `variants:` into a `send:`"
                )
            if self.entry is not None and self.schedule is not None:
                raise ValueError(
                    "a journey with `entry: {event: ...}` enters on events, not on a schedule: "
                    "remove `schedule:` (or `entry:` to enter on the schedule)"
                )
            names = [s.name for s in self.steps]
            repeated = first_repeated(names)
            if repeated:
                raise ValueError(f"two steps are named `{repeated}`: give each step its own name")
            return self
        if self.reentry is not None or self.exit_when is not None or self.entry is not None:
            raise ValueError(
                "`reentry:`, `exit_when:` and `entry:` apply to journeys: add `steps:` or remove them"
            )
        if self.message is None and not self.variants:
            raise ValueError("write a `message:` (template folder) or `variants:` each with a message")
        if self.message is None and any(v.message is None for v in self.variants):
            raise ValueError("every variant needs a `message:` when the campaign has none")
        return self

    @property
    def is_journey(self) -> bool:
        return self.steps is not None

    def step_campaign(self, name: str) -> Campaign:
        """The campaign a journey's send step is: the journey's name, policies and priority with the
        step's message, variants, offer and channels (its control group was held out at entry).

        Why a campaign: selection, the ledger, rendering and sending all take one, so every rule of
        a campaign applies unchanged at each send of a journey.
        """
        send = self.step(name).send
        return Campaign(
            name=self.name,
            description=self.description,
            priority=self.priority,
            control_group=ControlGroup(percent=0),
            message=send.message,
            variants=send.variants,
            offer={**self.offer, **send.offer},
            channels=send.channels or self.channels,
            sending_window=self.sending_window,
            frequency_caps=self.frequency_caps,
            conversion=self.conversion,
            model_versions=self.model_versions,
        )

    def step(self, name: str) -> Any:
        """The step named ``name`` (KeyError if the journey has none)."""
        for s in self.steps or []:
            if s.name == name:
                return s
        raise KeyError(name)

    def effective_variants(self) -> list[Variant]:
        """The variants to assign, or one implicit variant named 'default'."""
        return effective_variants(self.variants, self.message)


Campaign.model_rebuild()
