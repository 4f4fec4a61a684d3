"""The Jinja2 environment marketers' templates run in: sandbox, limits, helpers, compile-once cache.

Why a sandbox with extra limits: templates are written by marketers, not programmers, and
run inside the send flow. Jinja's ImmutableSandboxedEnvironment already blocks Python
internals (``''.__class__``) and mutation; on top of it we cap ``range``, sequence and string
repetition, ``**`` and oversized integer arguments to methods (``'x'.ljust(10**9)``), so a
template can neither reach files, the network or internals, nor exhaust memory or CPU.

Why the locale helpers, the sandbox and its code generator share one module: they are one trust
boundary. The helpers register themselves as trusted callables, which the sandbox's ``call`` and
the compiled templates' fast paths (importing ``_TRUSTED_METHODS`` from this module by name) call
without checks; split apart, what a template may call directly would be spread over modules that
import each other. The e-mail source preparation (CSS inlining, link tracking) has no such tie:
it is in channels/email_source.py.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import MethodType
from typing import Any

import markupsafe
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import StrictUndefined, nodes, select_autoescape
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import do_default
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.tests import test_defined, test_none

# InliningLoader builds the environment; the others are re-exported (they lived here)
from channels.email_source import STYLESHEET as STYLESHEET
from channels.email_source import InliningLoader as InliningLoader
from channels.email_source import inline_css as inline_css
from channels.email_source import track_anchors as track_anchors

MAX_RANGE = 1000  # items a template loop may produce with range()
MAX_SIZE = 100_000  # characters or items a template may build by repetition or padding
SUPPORTED_LOCALES = ("fr", "en")


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


# LocaleHelpers' template helpers (percent is a memoized function: trusted by identity, above)
for _helper in (LocaleHelpers.money, LocaleHelpers.cents, LocaleHelpers.number, LocaleHelpers.date):
    trust_method(_helper)


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


def _escape_str(text: str) -> str:
    """markupsafe's escaping of a plain str, as a str (its C core, without the Markup wrapper)."""
    return str(markupsafe.escape(text))


escape_str: Callable[[str], str] = getattr(markupsafe, "_escape_inner", _escape_str)


class MessageCodeGenerator(CodeGenerator):
    """Jinja's code generator with inline fast paths in the compiled templates (why: these were
    most of a render's Python calls, and a call costs more than the work it does; together about
    a third of an e-mail's rendering time). Every fast path gives the same result as the path it
    skips, which stays in place for everything else:

    - ``obj.name`` on a plain dict, for a name that is not a dict method: the item lookup inline
      (a missing key gives the same undefined as MessageSandbox.getattr); other objects, and dict
      method names, go through the sandbox's ``environment.getattr``;
    - HTML output of a plain str is escaped by markupsafe's C escaper directly (same characters
      and entities; the Markup wrapper is not needed for text joined into the page); anything
      else (Markup, numbers, undefined) goes through ``escape()``;
    - ``f(a, b)`` where ``f`` is one of our trusted helper methods (money, track...): called
      directly after the same int-size check as MessageSandbox.call; other callees, keywords and
      ``*args`` go through ``environment.call`` (the sandbox's checks);
    - ``x | default(y)``, ``x is defined``, ``x is none``: Jinja's own tests, inline.
    """

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        self.writeline(
            "from channels.template_env import escape_str as _rl_esc, "
            "_TRUSTED_METHODS as _rl_trusted, MethodType as _rl_method"
        )
        super().visit_Template(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        """``f(a, b)`` calls our trusted helper methods directly, after the sandbox's int-size check
        (MessageSandbox.call does the same, behind argument packing); any other callee, or a call
        with keywords or ``*args``, goes through ``environment.call`` as before. The callee and
        arguments are evaluated once, in Jinja's order, into temporaries."""
        if (
            self.environment.is_async
            or forward_caller
            or node.kwargs
            or node.dyn_args
            or node.dyn_kwargs
            or len(node.args) > 3
        ):
            super().visit_Call(node, frame, forward_caller)
            return
        func = self.temporary_identifier()
        args = [self.temporary_identifier() for _ in node.args]
        self.write(f"({func}({', '.join(args)}) if ({func} := ")
        self.visit(node.node, frame)
        for name, arg in zip(args, node.args, strict=True):
            self.write(f", {name} := ")
            self.visit(arg, frame)
        self.write(f",) and {func}.__class__ is _rl_method and {func}.__func__ in _rl_trusted")
        for name in args:
            self.write(f" and ({name}.__class__ is not int or {-MAX_SIZE} <= {name} <= {MAX_SIZE})")
        extra = ["_loop_vars=_loop_vars"] if frame.loop_frame else []
        extra += ["_block_vars=_block_vars"] if frame.block_frame else []
        self.write(f" else environment.call(context, {', '.join([func, *args, *extra])}))")

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        if self.environment.is_async or not isinstance(node.attr, str) or node.attr in _DICT_ATTRS:
            super().visit_Getattr(node, frame)
            return
        name = repr(node.attr)
        self.write(f"((_rl_o[{name}] if {name} in _rl_o else environment.undefined(obj=_rl_o, name={name}))")
        self.write(" if (_rl_o := ")
        self.visit(node.node, frame)
        self.write(f").__class__ is dict else environment.getattr(_rl_o, {name}))")

    @optimizeconst
    def visit_Filter(self, node: nodes.Filter, frame: Frame) -> None:
        """``x | default(y)`` inline (Jinja's do_default: y when x is undefined), x then y evaluated
        once, in Jinja's order; other filters, or ``default`` with its boolean flag, as before."""
        if (
            self.environment.is_async
            or node.node is None
            or self.environment.filters.get(node.name) is not do_default
            or len(node.args) > 1
            or node.kwargs
            or node.dyn_args
            or node.dyn_kwargs
        ):
            super().visit_Filter(node, frame)
            return
        value, default = self.temporary_identifier(), self.temporary_identifier()
        self.write(f"(({default} if isinstance({value}, Undefined) else {value}) if ({value} := ")
        self.visit(node.node, frame)
        self.write(f", {default} := ")
        if node.args:
            self.visit(node.args[0], frame)
        else:
            self.write("''")
        self.write(",) else None)")

    @optimizeconst
    def visit_Test(self, node: nodes.Test, frame: Frame) -> None:
        """``x is defined`` / ``x is none`` inline (the same checks as Jinja's tests); others as before."""
        test = self.environment.tests.get(node.name)
        simple = not (
            self.environment.is_async or node.args or node.kwargs or node.dyn_args or node.dyn_kwargs
        )
        if simple and test is test_defined:
            self.write("(not isinstance(")
            self.visit(node.node, frame)
            self.write(", Undefined))")
        elif simple and test is test_none:
            self.write("(")
            self.visit(node.node, frame)
            self.write(" is None)")
        else:
            super().visit_Test(node, frame)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape or finalize.src is not None:
            super()._output_child_pre(node, frame, finalize)
            return
        self.write("(_rl_esc(_rl_e) if (_rl_e := ")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape or finalize.src is not None:
            super()._output_child_post(node, frame, finalize)
            return
        self.write(").__class__ is str else escape(_rl_e))")


class MessageSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus limits on repetition, powers and padding sizes."""

    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = MessageCodeGenerator

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


def make_environment(templates_dir: Path) -> MessageSandbox:
    """One environment per templates folder: compiled templates are cached for the process."""
    env = MessageSandbox(
        loader=InliningLoader(str(templates_dir), encoding="utf-8"),
        undefined=StrictUndefined,
        # memoized: Jinja asks again for every render (a new EvalContext per render)
        autoescape=lru_cache(maxsize=4096)(
            select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False)
        ),
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
