"""Cell normalization: e-mail and phone through email-validator and phonenumbers, and the small parsers."""

from datetime import UTC, date, datetime

import pytest

from audiences import normalize as norm


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("06 12 34 56 78", None, "+33612345678"),
        ("06.12.34.56.78", None, "+33612345678"),
        ("0612345678", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("0033612345678", None, "+33612345678"),
        ("0690 12 34 56", "GP", "+590690123456"),
        ("0690 12 34 56", None, "+590690123456"),  # overseas number without a country column
        ("0692 12 34 56", "RE", "+262692123456"),
        ("+44 7811 234567", "FR", "+447811234567"),
        ("07811 234567", "GB", "+447811234567"),
    ],
)
def test_phone_numbers_become_e164(raw, region, expected):
    assert norm.phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["06 12 34", "1234", "not a number", "+33 1"])
def test_invalid_phone_numbers_are_refused_with_advice(raw):
    with pytest.raises(norm.Invalid, match="not a valid number; write it as 06 12 34 56 78"):
        norm.phone(raw)


def test_email_is_validated_and_lower_cased_without_network():
    assert norm.email("  Jean.Dupont@Example.FR ") == "jean.dupont@example.fr"
    assert norm.email("zoé@exemple.fr") == "zoé@exemple.fr"
    for bad in ("jean@", "jean.dupont.example.fr", "a..b@example.fr", "jean@example"):
        with pytest.raises(norm.Invalid, match="not a valid address"):
            norm.email(bad)
    # no DNS lookup: a domain that surely has no MX record is still accepted
    assert norm.email("x@no-such-domain-relance.example") == "x@no-such-domain-relance.example"


def test_consent_values():
    assert norm.consent("yes", "consent_email") == "granted"
    assert norm.consent("Oui", "consent_email") == "granted"
    assert norm.consent("no", "consent_email") == "withdrawn"
    assert norm.consent(" ", "consent_email") is None
    with pytest.raises(norm.Invalid, match="consent_sms 'maybe' is not yes/no"):
        norm.consent("maybe", "consent_sms")


def test_dates_amounts_and_codes():
    assert norm.day("2024-03-31", "signup_date") == date(2024, 3, 31)
    assert norm.day("31/03/2024", "signup_date") == date(2024, 3, 31)
    with pytest.raises(norm.Invalid, match="write 2026-03-31"):
        norm.day("31.03.24", "signup_date")
    # a time without offset is the shop's local time (Paris: UTC+2 in summer)
    paris = "Europe/Paris"
    assert norm.moment("2025-07-01T12:00:00", "ordered_at", paris) == datetime(2025, 7, 1, 10, tzinfo=UTC)
    assert norm.moment("2025-07-01T12:00:00Z", "ordered_at", paris) == datetime(2025, 7, 1, 12, tzinfo=UTC)
    assert norm.cents("12,50", "amount") == 1250
    assert norm.cents("1 234.5", "amount") == 123450
    assert norm.locale("fr-fr", "fr_FR") == "fr_FR"
    assert norm.locale("", "fr_FR") == "fr_FR"
    assert norm.timezone("Indian/Reunion", "Europe/Paris") == "Indian/Reunion"
    with pytest.raises(norm.Invalid, match="IANA time zone"):
        norm.timezone("Paris", "Europe/Paris")
    assert norm.tags("Running| yoga ,running") == ["running", "yoga"]
    assert norm.gender("f") == "F"
    with pytest.raises(norm.Invalid):
        norm.year("1850")


def test_cached_french_fast_path_agrees_with_phonenumbers():
    """The per-prefix cache for metropolitan numbers gives phonenumbers' own answer."""
    import random

    import phonenumbers

    rng = random.Random(7)
    for _ in range(3000):
        number = "0" + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(8))
        parsed = phonenumbers.parse(number, "FR")
        try:
            got = norm.phone(number)
        except norm.Invalid:
            got = None
        if phonenumbers.is_valid_number(parsed):
            assert got is not None, number
            expected = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            assert got == expected or parsed.country_code != 33, number
        else:
            assert got is None or not got.startswith("+33"), number
