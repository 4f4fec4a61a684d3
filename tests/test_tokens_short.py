"""Short-code primitives: base62 and the HMAC tag computed from a pre-keyed HMAC."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from core.tokens import BASE62, SHORT_TAG_LEN, _short_tag, base62, unbase62


def _base62_by_digit(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 62)
        out = BASE62[r] + out
        if not n:
            return out


def test_base62_round_trips_and_matches_digit_by_digit():
    rnd = random.Random(5)
    edges = [62**k + d for k in range(12) for d in (-1, 0, 1)] + [3844 * 62 - 1, 3844 * 62]
    for n in [*range(5000), *edges, *(rnd.getrandbits(bits) for bits in range(1, 70) for _ in range(50))]:
        assert base62(n) == _base62_by_digit(n), n
        assert unbase62(base62(n)) == n
    with pytest.raises(ValueError):
        base62(-1)


@pytest.mark.parametrize("key", [b"k" * 32, b"", b"x" * 64, b"y" * 100])
def test_short_tag_is_hmac_sha256(key):
    digest = hmac.digest(key, b"3D7.1", hashlib.sha256)
    expected = base62(int.from_bytes(digest[:8], "big") % 62**SHORT_TAG_LEN).rjust(SHORT_TAG_LEN, "0")
    assert _short_tag(key, "3D7", "1") == expected
