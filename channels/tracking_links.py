"""Signed tracking links made fast enough for per-message use, and short links for SMS.

core.tokens builds a new itsdangerous serializer (re-deriving its key, compressing the payload)
on each call, about 25 us a token; an e-mail has about six links and a campaign millions of
e-mails. Here the key is derived once per (secret, kind) with itsdangerous' own Signer, the JSON of
each target URL is encoded once, and each token is one HMAC copy. The tokens are the ones
core.tokens.read_token verifies (same secret, salts, HMAC and layout; payload left uncompressed,
which itsdangerous accepts).

Short links (``/s/<ledger>.<link>.<tag>``, core.tokens.make_short_code) replace the ~90-character
click URL in SMS, where every character counts (160 GSM-7 characters a segment). The target URL
is not in the code: it is a row of the ``link`` table, each distinct URL stored once. A
``LinkRegistry`` gives the renderer the id of a URL without a database round trip per message:
``DbLinkRegistry`` inserts a URL the first time this process sees it and caches the id;
``MemoryLinkRegistry`` numbers URLs in memory (preview, validate: same length, not clickable).
"""

from __future__ import annotations

import json
import re
import threading
from binascii import b2a_base64
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Protocol

from itsdangerous.encoding import want_bytes
from itsdangerous.signer import Signer

from channels.template_env import trust_method
from core.settings import get_settings
from core.tokens import BadToken, make_short_code, read_short_code, read_token

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
MAX_SHORT_URL_BYTES = 2000  # longer targets keep the long click URL (a unique index has size limits)


class _Tokens:
    """Makes the tokens of one kind: itsdangerous' format (payload.signature, HMAC-SHA1 with its
    derived key) with the key derived and the HMAC keyed once, then copied per token.

    core.tokens.read_token (plain itsdangerous) verifies them: tests/test_render.py checks it.
    """

    def __init__(self, secret: str, kind: str) -> None:
        signer = Signer(secret, salt=f"relance.{kind}")
        # HMAC (RFC 2104) = H((K ^ opad) || H((K ^ ipad) || msg)): both keyed hashes are made once
        # and copied per token, which is what hmac.HMAC.copy() does minus its wrapper object.
        digest = signer.digest_method
        key = signer.derive_key()
        block = digest().block_size
        key = (digest(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = digest(key.translate(_IPAD))
        self._outer = digest(key.translate(_OPAD))
        self._sep = want_bytes(signer.sep)

    def dumps(self, payload: list[Any]) -> str:
        return self.sign(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))

    def sign(self, payload_json: str) -> str:
        """The token of an already serialized JSON payload (base64url without padding, as itsdangerous)."""
        value = b2a_base64(payload_json.encode("utf-8"), newline=False).translate(_URLSAFE).rstrip(b"=")
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        signature = b2a_base64(outer.digest(), newline=False).translate(_URLSAFE).rstrip(b"=")
        return (value + self._sep + signature).decode("ascii")


@lru_cache(maxsize=16)
def _serializer(secret: str, kind: str) -> _Tokens:
    return _Tokens(secret, kind)


@lru_cache(maxsize=4096)
def _url_json(url: str) -> str:
    """A target URL as JSON, encoded once per URL (a campaign links to a few dozen URLs)."""
    return json.dumps(url, ensure_ascii=False)


# --------------------------------------------------------------------------
# Link registries: URL <-> id of the `link` table
# --------------------------------------------------------------------------


class LinkRegistry(Protocol):
    def id_for(self, url: str) -> int | None:
        """The link id of ``url`` (registering it if needed); None: use the long click URL."""

    def url_for(self, link_id: int) -> str | None:
        """The URL of a link id, or None if unknown."""


def shortenable(url: str) -> bool:
    return url.startswith(("http://", "https://")) and len(url.encode("utf-8")) <= MAX_SHORT_URL_BYTES


class MemoryLinkRegistry:
    """Ids numbered in memory: short links of the real length for preview and validation.

    The links it makes are NOT clickable (the tracking server reads the ``link`` table): never use
    it to send.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def id_for(self, url: str) -> int | None:
        found = self._ids.get(url)
        if found is None and shortenable(url):
            with self._lock:
                found = self._ids.setdefault(url, len(self._ids) + 1)
                self._urls[found] = url
        return found

    def url_for(self, link_id: int) -> str | None:
        return self._urls.get(link_id)


class DbLinkRegistry:
    """The ``link`` table with a per-process cache: one insert-or-select per distinct URL per process.

    Rows are never changed, so a cached id stays right; concurrent workers inserting the same URL
    meet on the unique index (ON CONFLICT DO NOTHING, then select).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._ids: dict[str, int] = {}
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def id_for(self, url: str) -> int | None:
        found = self._ids.get(url)
        if found is None and shortenable(url):
            found = self.register([url]).get(url)
        return found

    def url_for(self, link_id: int) -> str | None:
        if link_id not in self._urls:
            from sqlalchemy import select

            from core.models import Link

            table = Link.__table__
            with self.engine.connect() as conn:
                url = conn.execute(select(table.c.url).where(table.c.id == link_id)).scalar()
            if url is None:
                return None
            self._remember(link_id, url)
        return self._urls[link_id]

    def register(self, urls: Iterable[str]) -> dict[str, int]:
        """Ids of ``urls`` (inserted if new), in one transaction: e.g. a campaign's URLs at run start."""
        urls = list(urls)
        wanted = sorted({u for u in urls if shortenable(u)} - self._ids.keys())
        if wanted:
            with self._lock, self.engine.begin() as conn:
                for url, link_id in upsert_links(conn, wanted).items():
                    self._remember(link_id, url)
        return {u: self._ids[u] for u in urls if u in self._ids}

    def _remember(self, link_id: int, url: str) -> None:
        self._ids[url] = link_id
        self._urls[link_id] = url


def upsert_links(conn: Any, urls: list[str]) -> dict[str, int]:
    """Insert the URLs missing from the ``link`` table and return {url: id} for all of them."""
    from sqlalchemy import insert, select

    from core.models import Link, utcnow

    table = Link.__table__
    rows = [{"url": u, "created_at": utcnow()} for u in urls]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=["url"]), rows)
    else:  # any other database: insert what a select did not find (single writer assumed)
        known = set(conn.execute(select(table.c.url).where(table.c.url.in_(urls))).scalars())
        missing = [r for r in rows if r["url"] not in known]
        if missing:
            conn.execute(insert(table), missing)
    found = conn.execute(select(table.c.url, table.c.id).where(table.c.url.in_(urls))).all()
    return {url: link_id for url, link_id in found}


# --------------------------------------------------------------------------
# The links of one message
# --------------------------------------------------------------------------


class Links:
    """The tracked URLs of one message (one ledger row); memoized per target within the message.

    ``base``/``secret`` default to the settings (the Renderer passes them to skip the lookup);
    ``registry`` enables ``short()`` links, else ``short()`` is the long click URL.
    """

    __slots__ = ("ledger_id", "_base", "_secret", "_clicks", "_registry", "__weakref__")

    def __init__(
        self,
        ledger_id: int,
        base: str | None = None,
        secret: str | None = None,
        registry: LinkRegistry | None = None,
    ) -> None:
        if base is None or secret is None:
            settings = get_settings()
            base = settings.public_base_url.rstrip("/") if base is None else base
            secret = settings.secret_key.get_secret_value() if secret is None else secret
        self.ledger_id = ledger_id
        self._base = base
        self._secret = secret
        self._clicks: dict[str, str] = {}
        self._registry = registry

    def _token(self, kind: str, payload: list) -> str:
        return _serializer(self._secret, kind).dumps(payload)

    def click(self, target: str) -> str:
        url = self._clicks.get(target)
        if url is None:
            token = _serializer(self._secret, "click").sign(f"[{int(self.ledger_id)},{_url_json(target)}]")
            url = self._clicks[target] = f"{self._base}/c/{token}"
        return url

    def short(self, target: str) -> str:
        """A short signed click URL (``/s/...``) when a registry knows ``target``, else ``click()``."""
        link_id = self._registry.id_for(target) if self._registry is not None else None
        if link_id is None:
            return self.click(target)
        return f"{self._base}/s/{make_short_code(self.ledger_id, link_id, self._secret)}"

    @trust_method
    def track(self, target: Any) -> str:
        """For templates: a signed click URL for an http(s) target; other values unchanged."""
        if target.__class__ is not str:  # Markup (an href built in the HTML template), numbers...
            target = str(target.unescape() if hasattr(target, "unescape") else target)
        target = target.strip()
        if not target.startswith(("http://", "https://")) or target.startswith(self._base + "/"):
            return target
        return self.click(target)

    def open_pixel(self) -> str:
        token = _serializer(self._secret, "open").sign(f"[{int(self.ledger_id)}]")
        return f"{self._base}/o/{token}.gif"

    def unsubscribe(self) -> str:
        return f"{self._base}/u/{_serializer(self._secret, 'unsubscribe').sign(f'[{int(self.ledger_id)}]')}"


_CLICK_URL = re.compile(r"https?://[^\s\"'<>]+/c/([A-Za-z0-9_\-.]+)")
_SHORT_URL = re.compile(r"https?://[^\s\"'<>]+/s/([0-9A-Za-z]+\.[0-9A-Za-z]+\.[0-9A-Za-z]+)")


def _short_target(code: str, registry: LinkRegistry | None) -> str | None:
    if registry is None:
        return None
    try:
        _ledger_id, link_id = read_short_code(code)
    except BadToken:
        return None
    return registry.url_for(link_id)


def untracked(text: str, registry: LinkRegistry | None = None) -> str:
    """``text`` with every tracked click URL replaced by its target: how channels are compared."""

    def target(match: re.Match[str]) -> str:
        try:
            return read_token("click", match.group(1)).url or match.group(0)
        except BadToken:
            return match.group(0)

    text = _CLICK_URL.sub(target, text)
    return _SHORT_URL.sub(lambda m: _short_target(m.group(1), registry) or m.group(0), text)


def click_targets(text: str, registry: LinkRegistry | None = None) -> list[str]:
    """Targets of the tracked click URLs (and short links ``registry`` knows) in ``text``, in order."""
    found: list[tuple[int, str]] = []
    for match in _CLICK_URL.finditer(text):
        try:
            url = read_token("click", match.group(1)).url
        except BadToken:
            continue
        if url:
            found.append((match.start(), url))
    for match in _SHORT_URL.finditer(text):
        url = _short_target(match.group(1), registry)
        if url:
            found.append((match.start(), url))
    out: list[str] = []
    for _pos, url in sorted(found):
        if url not in out:
            out.append(url)
    return out


Rewriter = Callable[[str], str]
