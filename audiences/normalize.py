"""Normalization and validation of one CSV cell at a time.

Every function returns the stored form or raises ``Invalid`` with a message
that says what was found and what to write instead. E-mail and phone checks
use the ``email-validator`` and ``phonenumbers`` libraries (no network: the
deliverability check is off) rather than home-grown regexes, because both
encode rules (IDN domains, numbering plans) that are easy to get wrong.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from core.models import CHANNELS


class Invalid(ValueError):
    """A cell that cannot be stored; the message is shown to the user with the line number."""


# French overseas territories share the national "0" prefix but have their own country
# codes: a "0690 ..." number is Guadeloupe (+590), not metropolitan France.
FRENCH_REGIONS = ("FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "NC", "PF", "WF")

YES = frozenset({"yes", "y", "oui", "o", "true", "1", "granted", "opt-in", "optin"})
NO = frozenset({"no", "n", "non", "false", "0", "withdrawn", "opt-out", "optout"})

_LOCALE = re.compile(r"^([a-z]{2,3})(?:[_-]([A-Za-z]{2}))?$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


# A plain ASCII dot-atom local part (what nearly every real address is) is valid under
# RFC 5322 by construction; only its domain then needs email-validator, once per domain.
_SIMPLE_EMAIL = re.compile(r"^([a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*)@([a-z0-9.-]+)$")


def email(value: str) -> str:
    """A syntactically valid address, lower-cased (so suppression hashes match).

    Why a fast path: email-validator costs ~25 us an address, a third of a
    million-row import; the common shape is checked by a strict pattern and its
    domain by email-validator (cached), anything else goes to email-validator whole.
    """
    value = value.strip()
    m = _SIMPLE_EMAIL.match(value.lower())
    if m and len(m.group(1)) <= 64 and len(value) <= 254 and _domain_ok(m.group(2)):
        return value.lower()
    return _email_full(value)


@lru_cache(maxsize=4096)
def _domain_ok(domain: str) -> bool:
    try:
        validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _email_full(value: str) -> str:
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(
            f"email {value!r} is not a valid address ({exc}); fix it or leave the cell empty"
        ) from None
    normalized = result.normalized.lower()
    if len(normalized) > 254:
        raise Invalid(f"email {value!r} is longer than 254 characters")
    return normalized


_SEPARATORS = re.compile(r"[\s.\-()/]")


def phone(value: str, region: str | None = None) -> str:
    """E.164 form of a number written nationally (region, then France and its overseas) or with +.

    Why a cache: phonenumbers costs ~30 us a number. Metropolitan French numbers
    have nine national digits and, in phonenumbers' own FR metadata, their validity
    depends on the first three national digits for mobiles (6, 7) and at most the
    first five otherwise; so a number written 0X XX XX XX XX is decided once per
    prefix by phonenumbers and the answer reused (tests check both paths agree).
    Every other number (overseas, foreign, odd lengths) goes through phonenumbers.
    """
    raw = value.strip()
    digits = _SEPARATORS.sub("", raw)
    if digits.startswith(("+33", "0033")) and len(digits) == len(digits.split("33", 1)[0]) + 11:
        digits = "0" + digits[-9:]
        region = region if region and region.upper() in FRENCH_REGIONS else "FR"
    if (
        (region is None or region.upper() == "FR")
        and len(digits) == 10
        and digits[0] == "0"
        and digits.isdigit()
    ):
        prefix = digits[:4] if digits[1] in "67" else digits[:6]
        if prefix not in _metropolitan:
            _metropolitan[prefix] = _metropolitan_number(digits)
        if _metropolitan[prefix]:
            return "+33" + digits[1:]
    return _phone_full(raw, region)


_metropolitan: dict[str, bool] = {}  # six-digit prefix -> valid metropolitan number


def _metropolitan_number(digits: str) -> bool:
    parsed = phonenumbers.parse(digits, "FR")
    return phonenumbers.is_valid_number(parsed) and parsed.country_code == 33


_PHONE_ADVICE = (
    "phone {raw!r} is not a valid number; write it as 06 12 34 56 78 or +33612345678, or leave the cell empty"
)


def _phone_full(raw: str, region: str | None) -> str:
    regions = [region.upper()] if region else []
    regions += [r for r in FRENCH_REGIONS if r not in regions]
    for reg in regions if not raw.startswith(("+", "00")) else [regions[0]]:
        try:
            parsed = phonenumbers.parse(raw, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise Invalid(_PHONE_ADVICE.format(raw=raw))


def consent(value: str, column: str) -> str | None:
    """'granted', 'withdrawn' or None (empty cell: leave the current consent unchanged)."""
    v = value.strip().lower()
    if not v:
        return None
    if v in YES:
        return "granted"
    if v in NO:
        return "withdrawn"
    raise Invalid(f"{column} {value!r} is not yes/no; write yes, no, or leave the cell empty")


def locale(value: str, default: str) -> str:
    v = value.strip()
    if not v:
        return default
    m = _LOCALE.match(v)
    if not m:
        raise Invalid(f"locale {value!r} is not a locale like fr_FR or en_GB")
    return m.group(1).lower() + ("_" + m.group(2).upper() if m.group(2) else "")


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def timezone(value: str, default: str) -> str:
    v = value.strip()
    if not v:
        return default
    if v not in _zones():
        raise Invalid(f"timezone {value!r} is not an IANA time zone like Europe/Paris or America/Guadeloupe")
    return v


def country(value: str) -> str | None:
    v = value.strip()
    if not v:
        return None
    if not _COUNTRY.match(v):
        raise Invalid(f"country {value!r} is not a two-letter ISO code like FR")
    return v.upper()


def gender(value: str) -> str | None:
    v = value.strip().upper()
    if not v:
        return None
    if v not in ("F", "M", "X"):
        raise Invalid(f"gender {value!r} is not F, M or X")
    return v


def year(value: str, column: str = "birth_year") -> int | None:
    v = value.strip()
    if not v:
        return None
    if not v.isdigit() or not 1900 <= int(v) <= date.today().year:
        raise Invalid(f"{column} {value!r} is not a year between 1900 and now")
    return int(v)


def day(value: str, column: str) -> date | None:
    """ISO 2026-03-31 or French 31/03/2026."""
    v = value.strip()
    if not v:
        return None
    try:
        if "/" in v:
            d, m, y = v.split("/")
            return date(int(y), int(m), int(d))
        return date.fromisoformat(v[:10])
    except ValueError:
        raise Invalid(f"{column} {value!r} is not a date; write 2026-03-31") from None


def moment(value: str, column: str, naive_zone: str) -> datetime | None:
    """An aware UTC datetime; a value without offset is read in ``naive_zone`` (the shop's time)."""
    v = value.strip()
    if not v:
        return None
    try:
        parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{column} {value!r} is not a date-time; write 2026-03-31T14:05:00+02:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(naive_zone))
    return parsed.astimezone(UTC)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def cents(value: str, column: str) -> int:
    """Euros with a dot or comma decimal separator (12,50 or 12.50) to integer cents."""
    v = value.strip().replace("\u00a0", "").replace(" ", "").replace(",", ".")
    try:
        amount = Decimal(v)
    except InvalidOperation:
        raise Invalid(f"{column} {value!r} is not an amount; write 12.50") from None
    if not amount.is_finite():
        raise Invalid(f"{column} {value!r} is not an amount; write 12.50")
    return int((amount * 100).to_integral_value())


def integer(value: str, column: str) -> int:
    v = value.strip()
    try:
        return int(v)
    except ValueError:
        raise Invalid(f"{column} {value!r} is not a whole number") from None


def channel(value: str, column: str = "preferred_channel", allow_all: bool = False) -> str | None:
    v = value.strip().lower()
    if not v:
        return None
    if v == "*" and allow_all:
        return v
    if v not in CHANNELS:
        raise Invalid(f"{column} {value!r} is not one of {', '.join(CHANNELS)}")
    return v


def currency(value: str) -> str:
    v = value.strip()
    if not v:
        return "EUR"
    if not _CURRENCY.match(v):
        raise Invalid(f"currency {value!r} is not a three-letter code like EUR")
    return v.upper()


def tags(value: str) -> list[str]:
    """Interests written ``running|yoga|wine`` (a comma also works); lower-cased, unique, in order."""
    out: list[str] = []
    for part in re.split(r"[|,;]", value):
        tag = part.strip().lower()
        if not tag:
            continue
        if len(tag) > 64:
            raise Invalid(f"interest {tag[:20]!r}... is longer than 64 characters")
        if tag not in out:
            out.append(tag)
    return out


def text(value: str, column: str, max_length: int) -> str | None:
    v = value.strip()
    if not v:
        return None
    if len(v) > max_length:
        raise Invalid(f"{column} is longer than {max_length} characters")
    return v
