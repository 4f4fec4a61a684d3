"""A realistic French customer base for demos and benchmarks, generated fast and deterministically.

Faker (fr_FR, en_GB) only fills small pools of names, cities and post codes;
every per-customer and per-order choice is a vectorized numpy draw, so a
million customers and four million orders take a minute or two rather than
an hour of per-row Faker calls. The same seed and ``as_of`` date give the
same files byte for byte. The files are then imported through the real
importer (``audiences.importer``), so demo data exercises the production path,
including the rejection of the few invalid addresses planted on purpose.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker

CATEGORIES = np.array(
    [
        "mode",
        "chaussures",
        "beaute",
        "maison",
        "sport",
        "high-tech",
        "enfants",
        "epicerie-fine",
        "jardin",
        "bijoux",
    ]
)
CATEGORY_WEIGHTS = np.array([0.22, 0.14, 0.13, 0.11, 0.1, 0.08, 0.08, 0.06, 0.05, 0.03])
CATEGORY_PRICE_EUR = np.array([45, 70, 28, 55, 50, 180, 32, 24, 38, 90])
PAYMENTS = np.array(["card", "paypal", "apple_pay", "klarna", "gift_card", "bank_transfer"])
PAYMENT_WEIGHTS = np.array([0.6, 0.2, 0.08, 0.05, 0.04, 0.03])
INTERESTS = np.array(
    ["mode", "chaussures", "beaute", "maison", "deco", "sport", "running", "yoga", "vin", "gastronomie",
     "voyage", "enfants", "high-tech", "jardin", "bio", "luxe", "bijoux", "lecture", "musique", "cuisine"]
)  # fmt: skip
DOMAINS = np.array(
    ["gmail.com", "orange.fr", "free.fr", "hotmail.fr", "laposte.net", "sfr.fr", "yahoo.fr", "outlook.fr",
     "wanadoo.fr", "icloud.com"]
)  # fmt: skip
DOMAIN_WEIGHTS = np.array([0.3, 0.15, 0.1, 0.1, 0.08, 0.07, 0.07, 0.06, 0.04, 0.03])
# (country, timezone, locale, weight, mobile (prefix, random digits) written nationally or with +)
REGIONS = [
    (
        "FR",
        "Europe/Paris",
        "fr_FR",
        0.885,
        tuple((f"06{d}", 7) for d in "01245678") + (("073", 7), ("075", 7), ("078", 7)),
    ),
    ("GP", "America/Guadeloupe", "fr_FR", 0.015, (("0690", 6),)),
    ("MQ", "America/Martinique", "fr_FR", 0.015, (("0696", 6),)),
    ("RE", "Indian/Reunion", "fr_FR", 0.02, (("0692", 6),)),
    ("GF", "America/Cayenne", "fr_FR", 0.005, (("06940", 5),)),
    ("GB", "Europe/London", "en_GB", 0.03, (("+44781", 7), ("+44780", 7), ("+44775", 7))),
    ("BE", "Europe/Brussels", "fr_BE", 0.015, (("+3247", 7),)),
    ("DE", "Europe/Berlin", "de_DE", 0.01, (("+49151", 8),)),
    ("ES", "Europe/Madrid", "es_ES", 0.005, (("+346", 8),)),
]
CUSTOMER_COLUMNS = [
    "external_id", "first_name", "last_name", "email", "phone", "locale", "timezone", "country", "city",
    "postcode", "gender", "birth_year", "signup_date", "preferred_channel", "interests", "consent_email",
    "consent_sms", "consent_push", "consent_source", "consent_at", "consent_proof",
]  # fmt: skip
DAY = 86_400


@dataclass
class DemoFiles:
    out: Path
    customers: Path
    orders: Path
    devices: Path
    suppressions: Path
    counts: dict[str, int] = field(default_factory=dict)


def _ascii(name: str) -> str:
    """E-mail local parts from names: 'Zoé Lefèvre' -> 'zoe.lefevre'."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == "-")


def _pools(seed: int) -> dict[str, np.ndarray]:
    fr, gb = Faker("fr_FR"), Faker("en_GB")
    fr.seed_instance(seed)
    gb.seed_instance(seed + 1)

    def uniq(fn, n):
        return np.array(sorted({fn() for _ in range(n)}))

    places = sorted({(fr.city(), fr.postcode()) for _ in range(3000)})
    return {
        "fr_f": uniq(fr.first_name_female, 1500),
        "fr_m": uniq(fr.first_name_male, 1500),
        "fr_last": uniq(fr.last_name, 3000),
        "gb_f": uniq(gb.first_name_female, 500),
        "gb_m": uniq(gb.first_name_male, 500),
        "gb_last": uniq(gb.last_name, 1000),
        "city": np.array([c for c, _ in places]),
        "postcode": np.array([p for _, p in places]),
    }


def _digits(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n random strings of k digits (none for n = 0: numpy's zfill cannot size an empty array)."""
    if n == 0:
        return np.empty(0, dtype=f"<U{k}")
    return np.char.zfill(rng.integers(0, 10**k, n).astype(str), k)


def _phones(rng: np.random.Generator, region_idx: np.ndarray) -> np.ndarray:
    """Mobile numbers in the mixed spellings real files have (06 12 34 56 78, 0612345678, +33 6...)."""
    n = len(region_idx)
    out = np.empty(n, dtype=object)
    for r, (_, _, _, _, prefixes) in enumerate(REGIONS):
        idx = np.flatnonzero(region_idx == r)
        pick = rng.integers(0, len(prefixes), len(idx))
        for k, (prefix, width) in enumerate(prefixes):
            sub = idx[pick == k]
            out[sub] = np.char.add(prefix, _digits(rng, len(sub), width)).astype(object)
    styles = rng.integers(0, 4, n)
    for i in np.flatnonzero((styles == 1) & (region_idx <= 4)):  # 06 12 34 56 78
        s = out[i]
        out[i] = " ".join(s[j : j + 2] for j in range(0, 10, 2))
    for i in np.flatnonzero((styles == 2) & (region_idx == 0)):  # +33 6 12 34 56 78
        s = out[i]
        out[i] = "+33 " + s[1] + " " + " ".join(s[j : j + 2] for j in range(2, 10, 2))
    return out


def generate_customers(rng: np.random.Generator, pools: dict, n: int, as_of: date) -> pd.DataFrame:
    region_w = np.array([r[3] for r in REGIONS])
    region = rng.choice(len(REGIONS), n, p=region_w / region_w.sum())
    gender = rng.choice(np.array(["F", "M", "X"]), n, p=[0.52, 0.46, 0.02])
    english = np.array([REGIONS[r][2] == "en_GB" for r in range(len(REGIONS))])[region]
    first = np.where(
        gender == "F",
        np.where(english, rng.choice(pools["gb_f"], n), rng.choice(pools["fr_f"], n)),
        np.where(english, rng.choice(pools["gb_m"], n), rng.choice(pools["fr_m"], n)),
    )
    last = np.where(english, rng.choice(pools["gb_last"], n), rng.choice(pools["fr_last"], n))
    ids = np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    # e-mail: first.last<number>@domain; a few planted invalid ones
    first_ascii = np.vectorize(_ascii_cached(pools), otypes=[object])(first)
    last_ascii = np.vectorize(_ascii_cached(pools), otypes=[object])(last)
    local = first_ascii + "." + last_ascii + np.arange(1, n + 1).astype(str)
    domain = rng.choice(DOMAINS, n, p=DOMAIN_WEIGHTS)
    email = local + "@" + domain.astype(object)
    has_email = rng.random(n) < 0.95
    bad_email = rng.random(n) < 0.002
    email = np.where(bad_email, local + "@" + np.where(rng.random(n) < 0.5, "gmail", ""), email)
    email = np.where(has_email, email, "")
    phone = _phones(rng, region)
    bad_phone = rng.random(n) < 0.002
    phone = np.where(bad_phone, "06 12 34", phone)
    phone = np.where(rng.random(n) < 0.8, phone, "")
    place = rng.integers(0, len(pools["city"]), n)
    overseas = np.isin(region, [1, 2, 3, 4])
    city = np.where(region == 0, pools["city"][place], "")
    postcode = np.where(region == 0, pools["postcode"][place], "")
    dom = np.clip(region - 1, 0, 4)
    city = np.where(
        overseas, np.array(["Pointe-à-Pitre", "Fort-de-France", "Saint-Denis", "Cayenne", ""])[dom], city
    )
    postcode = np.where(overseas, np.array(["97110", "97200", "97400", "97300", ""])[dom], postcode)
    birth = np.clip(rng.normal(1980, 13, n).round(), 1940, as_of.year - 16).astype(int)
    # signup: skewed to recent years, up to 8 years ago
    age_days = np.minimum((rng.exponential(700, n)).astype(int), 8 * 365)
    signup = np.datetime64(as_of) - age_days.astype("timedelta64[D]")
    channel = rng.choice(np.array(["email", "sms", "push", ""]), n, p=[0.6, 0.2, 0.1, 0.1])
    ntags = rng.choice(5, n, p=[0.25, 0.3, 0.25, 0.12, 0.08])
    tags_idx = rng.integers(0, len(INTERESTS), (n, 4))
    interests = np.array(
        ["|".join(dict.fromkeys(INTERESTS[tags_idx[i, : ntags[i]]])) for i in range(n)], dtype=object
    )
    consent_email = rng.choice(np.array(["yes", "no", ""]), n, p=[0.7, 0.1, 0.2])
    consent_sms = rng.choice(np.array(["yes", "no", ""]), n, p=[0.4, 0.25, 0.35])
    consent_push = rng.choice(np.array(["yes", "no", ""]), n, p=[0.15, 0.05, 0.8])
    consent_at_s = signup.astype("datetime64[s]") + rng.integers(8 * 3600, 22 * 3600, n).astype(
        "timedelta64[s]"
    )
    consent_at = np.char.add(np.datetime_as_string(consent_at_s, unit="s"), "Z")
    any_consent = (consent_email != "") | (consent_sms != "") | (consent_push != "")
    source = rng.choice(
        np.array(["website", "checkout", "store", "newsletter-form"]), n, p=[0.4, 0.35, 0.15, 0.1]
    )
    proof = np.char.add(np.char.add(source, " form v"), rng.integers(1, 4, n).astype(str))
    return pd.DataFrame(
        {
            "external_id": ids,
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "locale": np.array([r[2] for r in REGIONS])[region],
            "timezone": np.array([r[1] for r in REGIONS])[region],
            "country": np.array([r[0] for r in REGIONS])[region],
            "city": city,
            "postcode": postcode,
            "gender": gender,
            "birth_year": birth,
            "signup_date": np.datetime_as_string(signup, unit="D"),
            "preferred_channel": channel,
            "interests": interests,
            "consent_email": consent_email,
            "consent_sms": consent_sms,
            "consent_push": consent_push,
            "consent_source": np.where(any_consent, source, ""),
            "consent_at": np.where(any_consent, consent_at, ""),
            "consent_proof": np.where(any_consent, proof, ""),
        },
        columns=CUSTOMER_COLUMNS,
    )


def _ascii_cached(pools: dict):
    names = np.concatenate([pools[k] for k in ("fr_f", "fr_m", "fr_last", "gb_f", "gb_m", "gb_last")])
    table = {name: _ascii(name) or "client" for name in names}
    return table.__getitem__


def generate_orders(
    rng: np.random.Generator, customers: pd.DataFrame, per_customer: float, as_of: date
) -> pd.DataFrame:
    """Long-tail histories (negative binomial counts), 30 % of buyers lapsed for a year or more."""
    n = len(customers)
    shape = 0.7  # small shape = many one-off buyers and a few very loyal ones
    counts = rng.negative_binomial(shape, shape / (shape + per_customer), n)
    signup = (
        customers["signup_date"].to_numpy().astype("datetime64[D]").astype("datetime64[s]").astype(np.int64)
    )
    end_of_day = np.datetime64(as_of).astype("datetime64[s]").astype(np.int64)
    lapsed = rng.random(n) < 0.3
    end = np.where(lapsed, end_of_day - rng.integers(365, 900, n) * DAY, end_of_day)
    end = np.maximum(end, signup + DAY)
    owner = np.repeat(np.arange(n), counts)
    m = len(owner)
    ts = signup[owner] + (rng.random(m) * (end[owner] - signup[owner])).astype(np.int64)
    ts = ts - ts % DAY + rng.integers(7 * 3600, 23 * 3600, m)  # daytime
    fav = rng.choice(len(CATEGORIES), n, p=CATEGORY_WEIGHTS)
    cat = np.where(rng.random(m) < 0.6, fav[owner], rng.choice(len(CATEGORIES), m, p=CATEGORY_WEIGHTS))
    habit = rng.choice(len(PAYMENTS), n, p=PAYMENT_WEIGHTS)
    pay = np.where(rng.random(m) < 0.8, habit[owner], rng.choice(len(PAYMENTS), m, p=PAYMENT_WEIGHTS))
    cents = np.maximum(500, (CATEGORY_PRICE_EUR[cat] * rng.lognormal(0, 0.5, m) * 100).astype(np.int64))
    cents = cents - cents % 10  # prices end in 0
    order = np.argsort(ts, kind="stable")
    owner, ts, cat, pay, cents = owner[order], ts[order], cat[order], pay[order], cents[order]
    product = np.char.add(
        np.char.add(CATEGORIES[cat], "-"), np.char.zfill(rng.integers(1, 60, m).astype(str), 3)
    )
    return pd.DataFrame(
        {
            "external_id": np.char.add("O", np.char.zfill(np.arange(1, m + 1).astype(str), 8)),
            "customer_external_id": customers["external_id"].to_numpy()[owner],
            "ordered_at": np.char.add(np.datetime_as_string(ts.astype("datetime64[s]"), unit="s"), "Z"),
            "amount": np.char.add(
                np.char.add((cents // 100).astype(str), "."), np.char.zfill((cents % 100).astype(str), 2)
            ),
            "currency": "EUR",
            "category": CATEGORIES[cat],
            "product": product,
            "payment_method": PAYMENTS[pay],
        }
    )


def generate_devices(rng: np.random.Generator, customers: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """A push device for a quarter of customers (those who said yes to push much more often)."""
    n = len(customers)
    has = rng.random(n) < np.where(customers["consent_push"].to_numpy() == "yes", 0.9, 0.15)
    idx = np.flatnonzero(has)
    k = len(idx)
    tokens = rng.integers(0, 2**63 - 1, (k, 3), dtype=np.int64)
    token = [f"demo-{a:016x}{b:016x}{c:016x}" for a, b, c in tokens]
    seen = np.datetime64(as_of).astype("datetime64[s]") - rng.integers(0, 120 * DAY, k).astype(
        "timedelta64[s]"
    )
    return pd.DataFrame(
        {
            "customer_external_id": customers["external_id"].to_numpy()[idx],
            "token": token,
            "platform": rng.choice(np.array(["ios", "android", "web"]), k, p=[0.45, 0.45, 0.1]),
            "last_seen_at": np.char.add(np.datetime_as_string(seen, unit="s"), "Z"),
            "active": np.where(rng.random(k) < 0.95, "yes", "no"),
        }
    )


def generate_suppressions(rng: np.random.Generator, customers: pd.DataFrame) -> pd.DataFrame:
    """Unsubscribes and hard bounces carried over from a previous e-mail tool (0.5 % of addresses)."""
    emails = customers["email"].to_numpy()
    pick = np.flatnonzero((emails != "") & (rng.random(len(emails)) < 0.005))
    pick = pick[np.array(["@" in e and "." in e.split("@")[-1] for e in emails[pick]], dtype=bool)]
    return pd.DataFrame(
        {
            "address": emails[pick],
            "channel": "email",
            "reason": rng.choice(np.array(["unsubscribed", "hard_bounce"]), len(pick), p=[0.8, 0.2]),
            "source": "previous-esp",
        }
    )


def generate(
    out: Path, customers: int, seed: int = 42, orders_per_customer: float = 4.0, as_of: date | None = None
) -> DemoFiles:
    """Write customers.csv, orders.csv, devices.csv and suppressions.csv into ``out``."""
    as_of = as_of or date.today()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pools = _pools(seed)
    cust = generate_customers(rng, pools, customers, as_of)
    files = DemoFiles(
        out, out / "customers.csv", out / "orders.csv", out / "devices.csv", out / "suppressions.csv"
    )
    cust.to_csv(files.customers, index=False, lineterminator="\n", chunksize=100_000)
    orders = generate_orders(rng, cust, orders_per_customer, as_of)
    orders.to_csv(files.orders, index=False, lineterminator="\n", chunksize=200_000)
    files.counts["orders"] = len(orders)
    del orders
    devices = generate_devices(rng, cust, as_of)
    devices.to_csv(files.devices, index=False, lineterminator="\n")
    supp = generate_suppressions(rng, cust)
    supp.to_csv(files.suppressions, index=False, lineterminator="\n")
    files.counts.update(customers=len(cust), devices=len(devices), suppressions=len(supp))
    return files
