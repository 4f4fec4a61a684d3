"""Stable assignment: control group, variants and the global control group by hashing.

Why a hash and not a random draw stored somewhere: a rerun, the plan and the
run must assign every customer the same way without any state, on SQLite and
PostgreSQL alike. The hash is written twice, once as a SQL expression (so the
assignment stays inside the one selection query) and once in Python (tests,
``--explain``); both use only 64-bit integer arithmetic (+, *, &, >>) and
never overflow a signed 64-bit integer, so both databases compute the same bits.

The mix is a 32-bit multiply / add-shift finalizer (in the family of
murmur3's fmix32, with ``+`` instead of ``^`` because SQLite has no XOR
operator and an emulated XOR would repeat its operand four times in SQL).
Each customer falls into a bucket 0..9999; a salt derived from the campaign
name (sha256) makes the campaigns' assignments independent of each other
(tests/test_assign.py checks the shares and the independence).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import BigInteger, ColumnElement, Integer, case, cast, literal

BUCKETS = 10_000
MASK32 = 0xFFFFFFFF
MULTIPLIER = 0x045D9F3B  # odd constant with good avalanche in 32-bit mixes
ROUNDS = 3
GLOBAL_CONTROL_SALT_NAME = "relance:global-control"


Salt = tuple[int, int]


def salt(*parts: str) -> Salt:
    """A salt from names, e.g. salt("winback", "control"): an odd 31-bit multiplier and a 32-bit offset.

    The salt multiplies as well as shifts the id: with an offset alone, two
    campaigns' hashes were visibly correlated (h_b(id) = h_a(id + d)).
    """
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return (int.from_bytes(digest[:4], "big") | 1) & 0x7FFFFFFF, int.from_bytes(digest[4:8], "big")


def bucket(customer_id: int, salt_value: Salt) -> int:
    """The bucket (0..9999) of a customer for one salt: the Python twin of :func:`bucket_sql`."""
    mult, offset = salt_value
    x = (customer_id * mult + offset) & MASK32  # id < 2**32, mult < 2**31: below 2**63
    for _ in range(ROUNDS):
        x = (x + (x >> 16)) & MASK32
        x = (x * MULTIPLIER) & MASK32
    x = (x + (x >> 16)) & MASK32
    return x % BUCKETS


def bucket_sql(customer_id: ColumnElement, salt_value: Salt) -> ColumnElement:
    """The bucket (0..9999) as a SQL expression; operands are BIGINT so PostgreSQL never overflows int4.

    Each add-shift references the previous value twice, so the expression holds
    the customer id 16 times: small, and cheaper than a materialized subquery.
    """
    mult, offset = salt_value

    def big(v: int) -> ColumnElement:
        return literal(v, BigInteger)

    x = (cast(customer_id, BigInteger) * big(mult) + big(offset)).bitwise_and(big(MASK32))
    for _ in range(ROUNDS):
        x = (x + x.bitwise_rshift(literal(16, Integer))).bitwise_and(big(MASK32))
        x = (x * big(MULTIPLIER)).bitwise_and(big(MASK32))
    x = (x + x.bitwise_rshift(literal(16, Integer))).bitwise_and(big(MASK32))
    return x % big(BUCKETS)


def threshold(percent: float) -> int:
    """Buckets below this are held out for ``percent`` %."""
    return round(percent * BUCKETS / 100)


def control_salt(campaign: str) -> Salt:
    return salt(campaign, "control")


def variant_salt(campaign: str) -> Salt:
    return salt(campaign, "variant")


def global_control_salt() -> Salt:
    return salt(GLOBAL_CONTROL_SALT_NAME)


def in_control(customer_id: int, campaign: str, percent: float) -> bool:
    return bucket(customer_id, control_salt(campaign)) < threshold(percent)


def in_global_control(customer_id: int, percent: float) -> bool:
    return bucket(customer_id, global_control_salt()) < threshold(percent)


def variant_bounds(weights: Sequence[float]) -> list[int]:
    """Upper bucket bound of each variant (cumulative weights scaled to 10,000; the last is 10,000)."""
    total = float(sum(weights))
    bounds, acc = [], 0.0
    for w in weights:
        acc += w
        bounds.append(round(acc / total * BUCKETS))
    bounds[-1] = BUCKETS
    return bounds


def variant_of(customer_id: int, campaign: str, names: Sequence[str], weights: Sequence[float]) -> str:
    b = bucket(customer_id, variant_salt(campaign))
    for name, bound in zip(names, variant_bounds(weights), strict=True):
        if b < bound:
            return name
    return names[-1]


def variant_sql(
    customer_id: ColumnElement, campaign: str, values: Sequence[str], weights: Sequence[float]
) -> ColumnElement:
    """The variant's ``values`` entry (name or message) chosen by weight, as SQL."""
    if len(values) == 1:
        return literal(values[0])
    b = bucket_sql(customer_id, variant_salt(campaign))
    bounds = variant_bounds(weights)
    whens = [(b < bound, literal(v)) for v, bound in zip(values[:-1], bounds[:-1], strict=True)]
    return case(*whens, else_=literal(values[-1]))
