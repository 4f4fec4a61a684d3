"""The Jinja2 environment marketers' templates run in: sandbox, limits, helpers, compile-once cache.

Why a sandbox with extra limits: templates are written by marketers, not programmers, and
run inside the send flow. Jinja's ImmutableSandboxedEnvironment already blocks Python
internals (``''.__class__``) and mutation; on top of it we cap ``range``, sequence and string
repetition, ``**`` and oversized integer arguments to methods (``'x'.ljust(10**9)``), so a
template can neither reach files, the network or internals, nor exhaust memory or CPU.

Why CSS is inlined in the loader: e-mail clients ignore ``<style>`` (Gmail apps, Outlook), so
styles must be inline, and inlining (premailer) costs milliseconds. The CSS is static, so the
loader inlines each ``*.html.j2`` source ONCE, before Jinja compiles it; rendering a message is
then Jinja only. Jinja tags are swapped for inert placeholders while premailer parses the HTML.
"""

from __future__ import annotations

import html
import json
import logging
import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import MethodType
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_RANGE = 1000  # items a template loop may produce with range()
MAX_SIZE = 100_000  # characters or items a template may build by repetition or padding
STYLESHEET = "_layout/email.css"
SUPPORTED_LOCALES = ("fr", "en")

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"RLNCJ(\d+)X")


# --------------------------------------------------------------------------
# Locales and helpers
# --------------------------------------------------------------------------


def language_of(locale: str | None, default: str = "fr_FR") -> str:
    """'fr_FR' -> 'fr'; unknown or missing -> the default's language (a message must always go out)."""
    for candidate in (locale, default, "fr"):
        if candidate:
            lang = candidate.replace("-", "_").split("_")[0].lower()
            if lang:
                return lang
    return "fr"


@lru_cache(maxsize=64)
def babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("fr_FR")


GREETINGS = {"fr": "Bonjour", "en": "Hello"}


class LocaleHelpers:
    """Babel formatting for one locale, memoized: campaigns format the same few prices a million times."""

    def __init__(self, locale: str) -> None:
        self.locale_name = locale
        self.locale = babel_locale(locale)
        self.language = self.locale.language
        self._money = lru_cache(maxsize=4096)(self._money_uncached)
        self.percent = lru_cache(maxsize=1024)(self._percent)  # type: ignore[method-assign]
        self._globals = self._make_globals()

    def _money_uncached(self, amount: Decimal | float | int, currency: str) -> str:
        return format_currency(amount, currency, locale=self.locale)

    def money(self, amount: Any, currency: str = "EUR") -> str:
        """12.5 -> '12,50 €' (fr) / '€12.50' (en). Amounts are in currency units, not cents."""
        if amount is None:
            raise ValueError("money() got no amount (None)")
        return self._money(amount, currency)

    def cents(self, amount_cents: int, currency: str = "EUR") -> str:
        """Integer cents (the database convention) formatted as money."""
        return self.money(Decimal(int(amount_cents)) / 100, currency)

    def number(self, value: Any, format: str | None = None) -> str:  # noqa: A002 - Babel's name
        return format_decimal(value, format=format, locale=self.locale)

    def _percent(self, value: Any) -> str:
        """15 -> '15 %' (fr) / '15%' (en): the argument is in percent, as offer.discount_percent."""
        return format_percent(float(value) / 100, locale=self.locale)

    def date(self, value: date | datetime | str, format: str = "long") -> str:  # noqa: A002
        if isinstance(value, str):
            value = date.fromisoformat(value[:10])
        if isinstance(value, datetime):
            return format_datetime(value, format=format, locale=self.locale)
        return format_date(value, format=format, locale=self.locale)

    def greeting(self, first_name: str | None) -> str:
        """'Bonjour Marie' / 'Bonjour' when the first name is missing or blank."""
        word = GREETINGS.get(self.language, GREETINGS["en"])
        name = (first_name or "").strip()
        return f"{word} {name}" if name else word

    def percent(self, value: Any) -> str:  # replaced by a memoized version in __init__
        return self._percent(value)

    def globals(self) -> dict[str, Callable[..., Any]]:
        """The helpers a template sees (plus ``range``: renders use a shared context without env globals)."""
        return self._globals

    def _make_globals(self) -> dict[str, Callable[..., Any]]:
        helpers = {
            "money": self.money,
            "cents": self.cents,
            "number": self.number,
            "percent": self.percent,
            "format_date": self.date,
        }
        for helper in helpers.values():
            trust(helper)
        return {"range": safe_range, **helpers}


@lru_cache(maxsize=64)
def helpers_for(locale: str) -> LocaleHelpers:
    return LocaleHelpers(locale)


# --------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------


_TRUSTED: dict[int, Callable[..., Any]] = {}  # our helpers (by id): the sandbox calls them without its checks


_TOO_BIG = f"numbers above {MAX_SIZE} are not accepted as call arguments in templates"


_TRUSTED_METHODS: set[Callable[..., Any]] = set()  # functions whose bound methods we trust (Links.track)


def trust_method(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a method we wrote as safe to call directly on any instance (a decorator)."""
    _TRUSTED_METHODS.add(func)
    return func


def trust(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a helper we wrote as safe to call directly (the objects are kept alive by the dict)."""
    _TRUSTED[id(func)] = func
    return func


def safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return rng


def _too_big(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE


def paragraphs(text: str) -> list[str]:
    """Split a text on blank lines: how a marketer's multi-line `body:` becomes <p> blocks."""
    return list(_paragraphs(str(text)))


@lru_cache(maxsize=1024)
def _paragraphs(text: str) -> tuple[str, ...]:
    """Memoized: the body is usually the same text for every recipient of a message."""
    return tuple(p.strip() for p in re.split(r"\n\s*\n", text) if p.strip())


_DICT_ATTRS = frozenset(dir(dict))  # names where Jinja's getattr finds a dict method, not a key
_NO_VALUE = object()


class MessageSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus limits on repetition, powers and padding sizes."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``customer.first_name`` on a plain dict without the sandbox's exception round trip.

        Jinja tries ``getattr(obj, name)`` first, which fails (AttributeError) for every key of a
        dict unless the key is a dict method name, then falls back to ``obj[name]``. For plain
        dicts and names that are not dict attributes, the result is the same item lookup; the
        fast path only skips the raised and caught exception (the bulk of a render's attribute
        accesses: content.*, offer.*, product.*).
        """
        if obj.__class__ is dict and attribute.__class__ is str and attribute not in _DICT_ATTRS:
            value = obj.get(attribute, _NO_VALUE)
            if value is _NO_VALUE:
                return self.undefined(obj=obj, name=attribute)
            return value
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if _too_big(right) or (isinstance(right, int) and right > 64):
                raise SecurityError("exponent too large in a template")
            return operator.pow(left, right)
        if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(times, int) and len(seq) * max(times, 0) > MAX_SIZE:
                raise SecurityError(f"repetition would build more than {MAX_SIZE} characters/items")
        return operator.mul(left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for value in args:
            if value.__class__ is int and (value > MAX_SIZE or value < -MAX_SIZE):
                raise SecurityError(_TOO_BIG)
        if _TRUSTED.get(id(__obj)) is __obj or (
            __obj.__class__ is MethodType and __obj.__func__ in _TRUSTED_METHODS
        ):  # our helpers: skip the generic checks
            kwargs.pop("_block_vars", None)  # Jinja's bookkeeping, not arguments
            kwargs.pop("_loop_vars", None)
            if kwargs and any(_too_big(v) for v in kwargs.values()):
                raise SecurityError(_TOO_BIG)
            return __obj(*args, **kwargs)
        if kwargs and any(_too_big(v) for v in kwargs.values()):
            raise SecurityError(_TOO_BIG)
        return super().call(__context, __obj, *args, **kwargs)


class InliningLoader(FileSystemLoader):
    """Loads templates; ``*.html.j2`` sources come back with the shared CSS inlined, once.

    ``line_maps[filename]`` maps a line of the inlined source back to the marketer's file,
    so that errors name the line they wrote.
    """

    def __init__(self, searchpath: str, encoding: str = "utf-8") -> None:
        super().__init__(searchpath, encoding=encoding)
        self.line_maps: dict[str, dict[int, int]] = {}

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(".html.j2"):
            css_path = Path(self.searchpath[0]) / STYLESHEET
            css = css_path.read_text(encoding="utf-8") if css_path.exists() else ""
            source, self.line_maps[filename] = inline_css(source, css)
            source = track_anchors(source)
        return source, filename, uptodate


def inline_css(source: str, css: str) -> tuple[str, dict[int, int]]:
    """Inline ``css`` into a Jinja HTML source (a full document or a fragment of blocks).

    Returns the new source and a map {line in the new source: line in ``source``} for the
    lines that hold Jinja tags (where errors happen).
    """
    if not css.strip():
        return source, {}
    import cssutils
    from premailer import Premailer

    cssutils.log.setLevel(logging.CRITICAL)
    tags: list[tuple[str, int]] = []

    def protect(match: re.Match[str]) -> str:
        tags.append((match.group(0), source.count("\n", 0, match.start()) + 1))
        return f"RLNCJ{len(tags) - 1}X"

    protected = _JINJA_TAG.sub(protect, source)
    full = "<html" in protected.lower()
    flat_css = " ".join(css.split())
    if full:
        doc = re.sub(r"(</head>)", lambda m: f"<style>{flat_css}</style>{m.group(1)}", protected, count=1)
    else:
        doc = f"<html><head><style>{flat_css}</style></head><body>{protected}</body></html>"
    out = Premailer(
        doc,
        keep_style_tags=False,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        allow_network=False,
        disable_link_rewrites=True,
    ).transform(pretty_print=False)
    out = re.sub(r"<style[^>]*>.*?</style>", lambda m: " ".join(m.group(0).split()), out, flags=re.DOTALL)
    if not full:
        body = re.search(r"<body[^>]*>(.*)</body>", out, re.DOTALL)
        out = body.group(1) if body else out
    elif protected.lstrip().lower().startswith("<!doctype") and not out.lstrip().lower().startswith(
        "<!doctype"
    ):
        out = "<!DOCTYPE html>\n" + out
    pieces: list[str] = []
    line_map: dict[int, int] = {}
    line, pos = 1, 0
    for match in _PLACEHOLDER.finditer(out):
        before = out[pos : match.start()]
        line += before.count("\n")
        tag, original = tags[int(match.group(1))]
        for extra in range(tag.count("\n") + 1):
            line_map.setdefault(line + extra, original + extra)
        pieces += [before, tag]
        line += tag.count("\n")
        pos = match.end()
    pieces.append(out[pos:])
    return "".join(pieces), line_map


_ANCHOR = re.compile(r"<a\b(?:[^>{]|\{\{.*?\}\}|\{%.*?%\})*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_NOTRACK = re.compile(r"""\s+data-notrack\b(?:=(["'])[^"']*\1)?""", re.IGNORECASE)
_ONE_EXPR = re.compile(r"^\{\{(.*?)\}\}$", re.DOTALL)


def track_anchors(source: str) -> str:
    """Compile-time link tracking: ``<a href="X">`` becomes ``<a href="{{ track(X) }}">``.

    Done on the template source, once, rather than with a regex over every rendered e-mail.
    ``track`` (given per message) signs a click URL for http(s) targets and returns anything
    else unchanged. Anchors with ``data-notrack`` keep their link; the attribute is removed.
    """

    def anchor(match: re.Match[str]) -> str:
        tag = match.group(0)
        if _NOTRACK.search(tag):
            return _NOTRACK.sub("", tag)
        href = _HREF.search(tag)
        if not href:
            return tag
        value = href.group(3).strip()
        if value.startswith(("mailto:", "tel:", "sms:", "#")):
            return tag
        one = _ONE_EXPR.match(value)
        if one and "{{" not in one.group(1):
            new = f"{{{{ track({one.group(1).strip()}) }}}}"
        elif "{" not in value:
            new = "{{ track(%s) }}" % json.dumps(html.unescape(value))  # noqa: UP031 - Jinja braces
        else:  # a URL mixing text and expressions: capture it, then track it
            new = f"{{% set __href %}}{value}{{% endset %}}{{{{ track(__href) }}}}"
        return f"{tag[: href.start(3)]}{new}{tag[href.end(3) :]}"

    return _ANCHOR.sub(anchor, source)


def make_environment(templates_dir: Path) -> MessageSandbox:
    """One environment per templates folder: compiled templates are cached for the process."""
    env = MessageSandbox(
        loader=InliningLoader(str(templates_dir), encoding="utf-8"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
        cache_size=1000,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.globals.clear()  # no cycler/joiner/namespace/lipsum/dict: only what we list below
    env.globals.update(range=safe_range)
    env.filters["paragraphs"] = paragraphs
    return env
