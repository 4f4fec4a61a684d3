"""Signed tokens for tracked links, open pixels and unsubscribe links.

Rendering (channels/) makes them and the tracking server (tracking/) reads
them, so they live here. itsdangerous signs with the project's secret key;
a forged or altered token raises ``BadToken`` and must record nothing.
Tokens carry no expiry: an unsubscribe link must work for years.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from itsdangerous import BadSignature, URLSafeSerializer

from core.settings import get_settings

KINDS = ("click", "open", "unsubscribe")


class BadToken(ValueError):
    """The token was not made by us (forged, altered or truncated)."""


@dataclass(frozen=True)
class TokenData:
    kind: str
    ledger_id: int
    url: str | None = None


def _serializer(kind: str) -> URLSafeSerializer:
    if kind not in KINDS:
        raise ValueError(f"unknown token kind {kind!r}")
    return URLSafeSerializer(get_settings().secret_key.get_secret_value(), salt=f"relance.{kind}")


def make_token(kind: str, ledger_id: int, url: str | None = None) -> str:
    payload: list = [ledger_id] if url is None else [ledger_id, url]
    return _serializer(kind).dumps(payload)


def read_token(kind: str, token: str) -> TokenData:
    try:
        payload = _serializer(kind).loads(token)
    except BadSignature as exc:
        raise BadToken(f"invalid {kind} token") from exc
    if not isinstance(payload, list) or not payload or not isinstance(payload[0], int):
        raise BadToken(f"malformed {kind} token")
    return TokenData(kind=kind, ledger_id=payload[0], url=payload[1] if len(payload) > 1 else None)


def _base() -> str:
    return get_settings().public_base_url.rstrip("/")


def click_url(ledger_id: int, target: str) -> str:
    return f"{_base()}/c/{make_token('click', ledger_id, target)}"


def open_pixel_url(ledger_id: int) -> str:
    return f"{_base()}/o/{make_token('open', ledger_id)}.gif"


def unsubscribe_url(ledger_id: int) -> str:
    return f"{_base()}/u/{make_token('unsubscribe', ledger_id)}"


# ---- short click codes (SMS): /s/<ledger>.<link>.<tag> ------------------------------------
# A short code names a ledger row and a row of the ``link`` table (each distinct target URL
# stored once) in base62, plus a 10-character base62 HMAC-SHA256 tag (59 bits: forging one
# online is hopeless). About 20 characters instead of the ~90 of a click token, so a French
# promo SMS with its link stays in one segment.

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62 = {c: i for i, c in enumerate(BASE62)}
SHORT_TAG_LEN = 10
_TAG_MOD = 62**SHORT_TAG_LEN


_PAIRS = [a + b for a in BASE62 for b in BASE62]  # two digits per division: half the loop turns


def base62(n: int) -> str:
    if n < 0:
        raise ValueError("base62 of a negative number")
    if n < 62:
        return BASE62[n]
    out = []
    while n:
        n, r = divmod(n, 3844)
        out.append(_PAIRS[r])
    return "".join(reversed(out)).lstrip("0")


def unbase62(text: str) -> int:
    n = 0
    for c in text:
        n = n * 62 + _B62[c]
    return n


@lru_cache(maxsize=8)
def _short_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"relance.short", hashlib.sha256).digest()


@lru_cache(maxsize=8)
def _short_hmac(key: bytes) -> hmac.HMAC:
    """The HMAC keyed once; each tag copies it (1 us less per SMS than keying anew with hmac.digest)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _short_tag(key: bytes, ledger: str, link: str) -> str:
    mac = _short_hmac(key).copy()
    mac.update(f"{ledger}.{link}".encode("ascii"))
    return base62(int.from_bytes(mac.digest()[:8], "big") % _TAG_MOD).rjust(SHORT_TAG_LEN, "0")


def make_short_code(ledger_id: int, link_id: int, secret: str | None = None) -> str:
    """``<ledger_id>.<link_id>.<tag>`` in base62; ``secret`` defaults to the settings' key."""
    key = _short_key(secret or get_settings().secret_key.get_secret_value())
    ledger, link = base62(ledger_id), base62(link_id)
    return f"{ledger}.{link}.{_short_tag(key, ledger, link)}"


def read_short_code(code: str) -> tuple[int, int]:
    """(ledger_id, link_id) of a code we made; ``BadToken`` for anything else (record nothing)."""
    parts = code.split(".")
    if (
        len(parts) != 3
        or not all(parts)
        or len(parts[0]) > 11
        or len(parts[1]) > 11
        or any(c not in _B62 for c in parts[0] + parts[1] + parts[2])
    ):
        raise BadToken("malformed short link")
    key = _short_key(get_settings().secret_key.get_secret_value())
    if not hmac.compare_digest(_short_tag(key, parts[0], parts[1]), parts[2]):
        raise BadToken("invalid short link")
    return unbase62(parts[0]), unbase62(parts[1])


def short_url(ledger_id: int, link_id: int) -> str:
    return f"{_base()}/s/{make_short_code(ledger_id, link_id)}"
