"""Declared customer event types: audiences/events.yaml (RELANCE_EVENTS_FILE) plus relance's own.

Why declared: an event the shop sends is only useful if a rule can rely on its properties
(``cart_value`` is a number, ``category`` a text). Declaring them lets ingestion refuse an
unknown type or a wrongly typed property with a clear message at the door, instead of a rule
silently matching nobody months later. The types relance produces itself (``order_placed``,
``customer_created``, the anniversaries, ``lapsing``) are declared here, in code: their names
are reserved.

The file is loaded like segments.yaml (core.spec_loader), so every mistake is reported as
``file:line:column: what to write instead``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from core.spec_base import StrictModel, nearest
from core.spec_loader import Located, Problem, SpecError, display_path, load_located

PropertyType = Literal["string", "number", "integer", "boolean", "datetime"]
PROPERTY_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "datetime")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_TEXT = 1000  # characters of a string property
DEFAULT_RETENTION_DAYS = 365


class EventTypeSpec(StrictModel):
    """One declared type, as written in the file."""

    description: str = Field("", description="what the event means, for whoever writes rules")
    properties: dict[str, PropertyType] = Field(
        default_factory=dict, description="name: string | number | integer | boolean | datetime"
    )
    retention_days: int = Field(DEFAULT_RETENTION_DAYS, ge=1, le=3650, description="kept this many days")


class EventTypesFile(StrictModel):
    events: dict[str, EventTypeSpec] = Field(default_factory=dict)


@dataclass(frozen=True)
class EventType:
    name: str
    properties: dict[str, str]
    retention_days: int = DEFAULT_RETENTION_DAYS
    description: str = ""
    builtin: bool = False  # produced by relance itself: never accepted from outside


# Produced by relance (audiences.customer_events): names reserved, never accepted from senders.
BUILTIN: dict[str, EventType] = {
    t.name: t
    for t in (
        EventType(
            "order_placed",
            {"order_id": "string", "amount": "number", "currency": "string", "category": "string",
             "product": "string"},
            730,
            "an order, from `relance import orders` or POST /events/conversions (amount in currency units)",
            True,
        ),
        EventType("customer_created", {}, 365, "a new customer, from `relance import customers`", True),
        EventType(
            "first_order_anniversary",
            {"years": "integer", "first_order_at": "datetime"},
            400,
            "a year (or more) to the day since the customer's first order (derived daily)",
            True,
        ),
        EventType(
            "signup_anniversary",
            {"years": "integer", "signup_date": "string"},
            400,
            "a year (or more) to the day since the customer's signup_date (derived daily)",
            True,
        ),
        EventType(
            "lapsing",
            {"days": "integer", "last_order_at": "datetime"},
            400,
            "no order for `days` days (RELANCE_LAPSING_DAYS, derived daily)",
            True,
        ),
    )
}  # fmt: skip


class InvalidEvent(ValueError):
    """An event that cannot be stored; the message says why and what to send instead."""


@dataclass
class EventTypes:
    """The declared types (file + built-in): what ``store_events`` checks every event against."""

    types: dict[str, EventType] = field(default_factory=lambda: dict(BUILTIN))
    file: str = "<built-in>"

    # ---- loading ---------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str | None = None) -> EventTypes:
        """The types of ``path`` (default settings.events_file) and the built-in ones; SpecError if broken.

        A missing file means only the built-in types (every other type is refused).
        """
        if path is None:
            from core.settings import get_settings

            path = get_settings().events_file
        path = Path(path)
        if not path.is_file():
            return cls(file=display_path(path))
        located = load_located(path, EventTypesFile)
        problems = _name_problems(located)
        if problems:
            raise SpecError(problems)
        types = dict(BUILTIN)
        for name, spec in located.value.events.items():
            types[name] = EventType(name, dict(spec.properties), spec.retention_days, spec.description)
        return cls(types, located.file)

    @classmethod
    def of(
        cls, declared: dict[str, dict[str, str]], retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> EventTypes:
        """Types built in code (tests, tools): ``{name: {property: type}}`` plus the built-in ones."""
        types = dict(BUILTIN)
        types.update({n: EventType(n, dict(p), retention_days) for n, p in declared.items()})
        return cls(types, "<code>")

    # ---- the API ingestion and rules use --------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> EventType:
        found = self.types.get(name)
        if found is None:
            raise InvalidEvent(self._unknown(name))
        return found

    def names(self) -> list[str]:
        return list(self.types)

    def check(self, name: Any, properties: Any, *, builtin_ok: bool = False) -> dict[str, Any]:
        """The properties of an event of type ``name``, checked and normalized; InvalidEvent otherwise.

        Null properties are dropped (absent); datetimes become ISO 8601 UTC text so that they
        compare as text in SQL on both databases.
        """
        if not isinstance(name, str) or not name:
            raise InvalidEvent("`type` is missing: give the name of a type declared in " + self.file)
        etype = self.get(name)
        if etype.builtin and not builtin_ok:
            raise InvalidEvent(
                f"`{name}` is produced by relance itself (built-in); send a type of your own, "
                f"declared in {self.file}"
            )
        if properties is None:
            return {}
        if not isinstance(properties, dict):
            raise InvalidEvent("`properties` must be an object of name: value")
        out: dict[str, Any] = {}
        for key, value in properties.items():
            wanted = etype.properties.get(key)
            if wanted is None:
                close = nearest(str(key), etype.properties)
                hint = (
                    f"did you mean `{close}`?"
                    if close
                    else (
                        f"declared: {', '.join(etype.properties)}" if etype.properties else "it declares none"
                    )
                )
                where = f"declare it in {self.file}"
                raise InvalidEvent(f"unknown property `{key}` for `{name}`; {hint} ({where})")
            if value is not None:
                out[key] = _typed(name, key, wanted, value)
        return out

    def retention(self) -> dict[str, int]:
        return {n: t.retention_days for n, t in self.types.items()}

    def _unknown(self, name: str) -> str:
        close = nearest(name, [n for n, t in self.types.items() if not t.builtin])
        hint = f"did you mean `{close}`? " if close else ""
        return f"unknown event type `{name}`; {hint}declare it under `events:` in {self.file}"


def _typed(event: str, key: str, wanted: str, value: Any) -> Any:
    """``value`` as stored for a property of type ``wanted``, or InvalidEvent naming both."""
    where = f"property `{key}` of `{event}`"
    if wanted == "string":
        if isinstance(value, str) and len(value) <= MAX_TEXT:
            return value
        if isinstance(value, str):
            raise InvalidEvent(f"{where} is longer than {MAX_TEXT} characters")
    elif wanted == "number":
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value
    elif wanted == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif wanted == "boolean":
        if isinstance(value, bool):
            return value
    elif wanted == "datetime" and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.astimezone(UTC).isoformat(timespec="seconds")
        raise InvalidEvent(
            f"{where} is {value!r}: write a date-time with its offset, e.g. 2026-12-04T10:00:00Z"
        )
    examples = {
        "string": '"mode"', "number": "49.9", "integer": "3", "boolean": "true",
        "datetime": '"2026-12-04T10:00:00Z"',
    }  # fmt: skip
    shown = repr(value) if not isinstance(value, str) else f'"{value[:40]}"'
    raise InvalidEvent(f"{where} is {shown} but is declared {wanted}: send e.g. {examples[wanted]}")


def _name_problems(located: Located[EventTypesFile]) -> list[Problem]:
    """Type and property names that cannot be used, each at its line."""
    out: list[Problem] = []
    builtin = ", ".join(BUILTIN)
    for name, spec in located.value.events.items():
        at = ("events", name)
        if name in BUILTIN:
            text = (
                f"`{name}` is a built-in event produced by relance; choose another name (built-in: {builtin})"
            )
            out.append(located.problem(at, text, key=True))
        elif not NAME.match(name):
            text = (
                f"`{name}` is not a valid event name: use lowercase letters, digits and _, "
                "starting with a letter, e.g. `cart_abandoned`"
            )
            out.append(located.problem(at, text, key=True))
        for prop in spec.properties:
            if not NAME.match(str(prop)):
                text = f"`{prop}` is not a valid property name: use lowercase letters, digits and _"
                out.append(located.problem((*at, "properties", prop), text, key=True))
    return sorted(out, key=lambda p: (p.line or 0, p.column or 0))


_cache: dict[str, tuple[float, EventTypes]] = {}


def current(path: Path | str | None = None) -> EventTypes:
    """``EventTypes.load`` again only when the file changed (the tracking server checks every batch)."""
    if path is None:
        from core.settings import get_settings

        path = get_settings().events_file
    key = str(path)
    try:
        stamp = Path(path).stat().st_mtime
    except OSError:
        stamp = -1.0
    hit = _cache.get(key)
    if hit is None or hit[0] != stamp:
        hit = (stamp, EventTypes.load(path))
        _cache[key] = hit
    return hit[1]


__all__ = ["BUILTIN", "PROPERTY_TYPES", "EventType", "EventTypes", "InvalidEvent", "current"]
