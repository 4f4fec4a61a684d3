"""The building blocks of the campaign language: names, times, schedules, channels, offers.

Shared by campaigns (core.spec), audience rules (core.spec_rules) and journey steps
(core.spec_steps). Every check that needs nothing but the file itself (cron syntax, time zone
names, an impossible sending window, duplicate variants...) is a validator here, so that no
command can load a campaign that could never run.
"""

from __future__ import annotations

import contextlib
import difflib
from datetime import datetime, time
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
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
    with contextlib.suppress(ValueError, KeyError, OSError):  # not a zone: say which is closest
        ZoneInfo(name)
        return name
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


def first_repeated(names: list[str]) -> str | None:
    """The first name (alphabetically) written twice, for "give each ... its own name" errors."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    return repeated[0] if repeated else None


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


def unique_variants(v: list[Variant]) -> list[Variant]:
    """A field validator's body: two variants may not share a name."""
    repeated = first_repeated([x.name for x in v])
    if repeated:
        raise ValueError(f"two variants are named `{repeated}`: give each variant its own name")
    return v


def effective_variants(variants: list[Variant], message: str | None) -> list[Variant]:
    """The variants to assign (each with a message, ``message`` by default), or one named 'default'."""
    if variants:
        return [v if v.message else v.model_copy(update={"message": message}) for v in variants]
    return [Variant(name="default", weight=1.0, message=message)]


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
        repeated = first_repeated(v)
        if repeated:
            raise ValueError(f"`{repeated}` is listed twice in `order`: list each channel once")
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
