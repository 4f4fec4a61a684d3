"""One message, every channel: render a template folder for e-mail, SMS and push.

A message is a folder under templates/ (see templates/README.md): ``content.yaml`` holds the
shared content per locale (headline, body, call to action...) and the short channel texts
(e-mail subject and preheader, SMS, push title and body); ``email.html.j2`` and
``email.txt.j2`` are optional and extend the shared layout in ``templates/_layout/``.

Contract with the send flow: ``Renderer.render``/``render_all`` raise ``RenderError`` for ONE
message (template error, undefined variable, sandbox violation). The caller records the error
on that ledger row and goes on with the batch; nothing here raises anything else for a
template's fault. A Renderer is thread-safe for rendering and compiles each message once:
create one per process (or per flow run) and reuse it.
"""

from __future__ import annotations

import html as html_lib
import itertools
import re
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.sandbox import SecurityError

from channels import sms_encoding
from channels.email_message import RenderedEmail, unsubscribe_headers
from channels.push_message import RenderedPush
from channels.template_env import LocaleHelpers, helpers_for, language_of, make_environment
from channels.tracking_links import LinkRegistry, Links, click_targets

__all__ = [
    "CHANNELS",
    "Problem",
    "RenderContext",
    "RenderError",
    "RenderedEmail",
    "RenderedPush",
    "RenderedSms",
    "Renderer",
]

CHANNELS = ("email", "sms", "push")
CONTENT_FILE = "content.yaml"
LAYOUT_HTML = "_layout/email.html.j2"
LAYOUT_TEXT = "_layout/email.txt.j2"
CHANNEL_KEYS = {"email", "sms", "push"}
TOP_KEYS = {"channels", "link", "deep_link", "description", "marketing"}
# A content.yaml field that reads only these names renders the same for every recipient of one
# (message, locale, offer, variant, campaign): it is rendered once and reused (see Renderer._value).
OFFER_ONLY_NAMES = frozenset(
    {
        "offer",
        "variant",
        "campaign",
        "locale",
        "sender",
        "money",
        "cents",
        "number",
        "percent",
        "format_date",
        "range",
    }
)
# A field that reads only these renders the same for customers with the same first name (the
# greeting of a subject or headline): cached per first name too, names repeat across a base.
NAME_NAMES = OFFER_ONLY_NAMES | {"first_name", "greeting"}
STATIC_CACHE_MAX = 50_000
CONTEXT_NAMES = (
    "customer, features, offer, variant, campaign, recommendations, content, link, greeting, "
    "first_name, locale, sender, money(), cents(), number(), percent(), format_date()"
)


# --------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------


@dataclass
class RenderContext:
    """Everything a template may read about one recipient of one campaign run."""

    customer: dict[str, Any]
    features: dict[str, Any] = field(default_factory=dict)
    offer: dict[str, Any] = field(default_factory=dict)
    variant: str = "default"
    campaign: str = ""
    ledger_id: int = 0
    recommendations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RenderedSms:
    text: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    ucs2_chars: list[str]
    to: str | None = None

    @property
    def cost(self) -> float:
        """Estimated price in euros (segments x settings.sms_price_per_segment)."""
        return sms_encoding.cost(self.segments)


@dataclass(frozen=True)
class Problem:
    """One thing `relance validate` reports: where (file, line) and what to do."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class RenderError(Exception):
    """A template failed for one message; ``file`` and ``line`` point at the marketer's source."""

    def __init__(self, message: str, file: str, line: int | None = None) -> None:
        self.message, self.file, self.line = message, file, line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")

    def problem(self) -> Problem:
        return Problem(self.file, self.line, self.message)


# --------------------------------------------------------------------------
# A compiled message
# --------------------------------------------------------------------------


@dataclass
class _Field:
    """One Jinja string of content.yaml, compiled, with where it was written."""

    template: Template | None  # None: a plain string with no Jinja syntax (rendered for free)
    file: str
    line: int
    static: str = ""
    offer_only: bool = False  # reads only OFFER_ONLY_NAMES: same text for every recipient of an offer
    per_name: bool = False  # reads only those and the first name: same text for customers named alike
    link_slot: bool = False  # per_name but for `link`, which it only prints ({{ link }}): see _sms_text


@dataclass
class _LocaleTexts:
    shared: dict[str, _Field] = field(default_factory=dict)
    email: dict[str, _Field] = field(default_factory=dict)
    sms: _Field | None = None
    push: dict[str, _Field] = field(default_factory=dict)
    shared_per_name: bool = False  # every shared field is plain or per_name (set once loaded)


@dataclass
class _Message:
    name: str
    folder: Path
    channels: list[str]
    marketing: bool
    link: _Field | None
    deep_link: _Field | None
    locales: dict[str, _LocaleTexts]
    shown: str = ""  # content.yaml as shown in errors
    html: Template | None = None
    text: Template | None = None
    html_file: str = ""
    text_file: str = ""


class _Located(yaml.SafeLoader):
    """A YAML loader that keeps each string's line, for error messages."""


def _scalar_with_line(loader: _Located, node: yaml.ScalarNode) -> _Src:
    block = node.style in ("|", ">")  # a block scalar's text starts on the next line
    return _Src(loader.construct_scalar(node), node.start_mark.line + 1 + (1 if block else 0))


class _Src(str):
    """A string from content.yaml that knows its first line."""

    line: int

    def __new__(cls, value: str, line: int) -> _Src:
        obj = super().__new__(cls, value)
        obj.line = line
        return obj


_Located.add_constructor("tag:yaml.org,2002:str", _scalar_with_line)


class Renderer:
    """Compiles each message folder once and renders it per recipient and channel."""

    def __init__(self, templates_dir: Path | None = None, links: LinkRegistry | None = None) -> None:
        """``links``: where SMS short links get their link ids (channels.tracking_links.DbLinkRegistry
        to send, MemoryLinkRegistry for previews); None keeps the long signed click URL in SMS."""
        from relance.settings import get_settings

        settings = get_settings()
        self.templates_dir = Path(templates_dir or settings.templates_dir)
        self.env = make_environment(self.templates_dir)
        self.default_locale = settings.default_locale
        self.stop_mention = settings.sms_stop_mention
        self.max_segments = settings.sms_max_segments
        self.mailto = settings.unsubscribe_mailto
        self.sender = {
            "name": settings.sender_name,
            "email": settings.sender_email,
            "postal_address": settings.sender_postal_address,
        }
        self.base_url = settings.public_base_url.rstrip("/")
        self._secret = settings.secret_key.get_secret_value()
        self.links = links
        self._messages: dict[str, _Message] = {}
        self._field_files: dict[str, tuple[str, int]] = {}  # jinja filename -> (file, first line)
        # offer-only texts (field, one_line, key id[, first name]), SMS texts and `content` dicts
        self._static: dict[tuple, Any] = {}
        self._keys: dict[tuple, int] = {}  # (locale, language, offer, variant, campaign) -> key id
        self._key_ids = itertools.count(1)
        self._locales: dict[tuple[str, str | None], tuple[str, _LocaleTexts, LocaleHelpers]] = {}

    # ---- discovery -------------------------------------------------------

    def _display(self, path: Path | str) -> str:
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.templates_dir.resolve().parent))
        except ValueError:
            return str(path)

    def exists(self, message: str) -> bool:
        return (self.templates_dir / message / CONTENT_FILE).is_file()

    def channels_of(self, message: str) -> list[str]:
        return list(self._compile(message).channels)

    # ---- compiling -------------------------------------------------------

    def _compile(self, message: str) -> _Message:
        compiled = self._messages.get(message)
        if compiled is None:
            compiled = self._messages[message] = self._load(message)
        return compiled

    def _load(self, message: str) -> _Message:
        folder = self.templates_dir / message
        content_path = folder / CONTENT_FILE
        shown = self._display(content_path)
        if not content_path.is_file():
            raise RenderError(
                f"no message `{message}`: create {shown} (see templates/README.md)", self._display(folder)
            )
        try:
            data = yaml.load(content_path.read_text(encoding="utf-8"), Loader=_Located)  # noqa: S506
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RenderError(f"YAML error: {exc}", shown, mark.line + 1 if mark else None) from exc
        if not isinstance(data, dict):
            raise RenderError("content.yaml must be a mapping of locales (fr:, en:) and settings", shown, 1)
        channels = [str(c) for c in data.get("channels", CHANNELS)]
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise RenderError(f"unknown channel(s) {unknown}: write email, sms and/or push", shown)
        locales = {}
        for key, section in data.items():
            if key in TOP_KEYS:
                continue
            if not isinstance(section, dict):
                raise RenderError(f"`{key}:` should be a locale section (fr:, en:) holding texts", shown)
            locales[str(key)] = self._load_locale(section, shown, str(key))
        if not locales:
            raise RenderError("no locale section: add `fr:` (and `en:`) with the texts", shown, 1)
        link = self._field(data["link"], shown) if "link" in data else None
        deep = self._field(data["deep_link"], shown) if "deep_link" in data else None
        compiled = _Message(
            message, folder, channels, bool(data.get("marketing", True)), link, deep, locales, shown
        )
        if "email" in channels:
            compiled.html = self._file_template(message, "email.html.j2", LAYOUT_HTML)
            compiled.text = self._file_template(message, "email.txt.j2", LAYOUT_TEXT)
            compiled.html_file = self._file_of(compiled.html)
            compiled.text_file = self._file_of(compiled.text)
        self._check_channel_texts(compiled, shown)
        return compiled

    def _load_locale(self, section: dict, shown: str, lang: str) -> _LocaleTexts:
        texts = _LocaleTexts()
        for key, value in section.items():
            if key == "email":
                texts.email = {k: self._field(v, shown) for k, v in (value or {}).items()}
            elif key == "push":
                texts.push = {k: self._field(v, shown) for k, v in (value or {}).items()}
            elif key == "sms":
                texts.sms = self._field(value, shown)
            else:
                texts.shared[str(key)] = self._field(value, shown)
        texts.shared_per_name = all(f.template is None or f.per_name for f in texts.shared.values())
        return texts

    def _check_channel_texts(self, compiled: _Message, shown: str) -> None:
        for lang, texts in compiled.locales.items():
            if "email" in compiled.channels and "subject" not in texts.email:
                raise RenderError(f"`{lang}: email: subject:` is missing", shown)
            if "sms" in compiled.channels and texts.sms is None:
                raise RenderError(f"`{lang}: sms:` is missing (the SMS text)", shown)
            if "push" in compiled.channels and not {"title", "body"} <= set(texts.push):
                raise RenderError(f"`{lang}: push:` needs `title:` and `body:`", shown)

    def _field(self, value: Any, shown: str) -> _Field:
        line = getattr(value, "line", 0)
        source = str(value) if value is not None else ""
        if "{" not in source:
            return _Field(None, shown, line, source)
        name = f"{shown}#{line}#{len(self._field_files)}"
        self._field_files[name] = (shown, line)
        try:
            code = self.env.compile(source, filename=name)
        except TemplateSyntaxError as exc:
            raise RenderError(
                f"template syntax error: {exc.message}", shown, line + (exc.lineno or 1) - 1
            ) from exc
        tree = self.env.parse(source)
        names = meta.find_undeclared_variables(tree)
        return _Field(
            self.env.template_class.from_code(self.env, code, self.env.make_globals(None)),
            shown,
            line,
            offer_only=names <= OFFER_ONLY_NAMES,
            per_name=names <= NAME_NAMES,
            link_slot=names <= NAME_NAMES | {"link"} and _printed_only(tree, "link"),
        )

    def _file_template(self, message: str, filename: str, fallback: str) -> Template:
        own = f"{message}/{filename}"
        name = own if (self.templates_dir / own).is_file() else fallback
        try:
            return self.env.get_template(name)
        except TemplateSyntaxError as exc:
            raise self._error(exc, self._display(self.templates_dir / name)) from exc
        except TemplateNotFound as exc:
            raise RenderError(
                f"template {exc.name} not found", self._display(self.templates_dir / name)
            ) from exc

    # ---- errors ----------------------------------------------------------

    def _error(self, exc: Exception, default_file: str, default_line: int | None = None) -> RenderError:
        """A RenderError naming the marketer's file and line for any template failure."""
        file, line = default_file, default_line
        if isinstance(exc, TemplateSyntaxError) and exc.filename:
            file, line = self._locate(exc.filename, exc.lineno) or (file, line)
        else:
            for frame in reversed(traceback.extract_tb(exc.__traceback__)):
                found = self._locate(frame.filename, frame.lineno)
                if found:
                    file, line = found
                    break
        return RenderError(self._explain(exc, file, line), file, line)

    def _locate(self, filename: str, lineno: int | None) -> tuple[str, int | None] | None:
        if filename in self._field_files:
            shown, first = self._field_files[filename]
            return shown, first + (lineno or 1) - 1
        line_maps = self.env.loader.line_maps  # type: ignore[union-attr]
        if filename in line_maps or filename.endswith(".j2"):
            mapped = line_maps.get(filename, {}).get(lineno or 0, lineno)
            return self._display(filename), mapped
        return None

    def _explain(self, exc: Exception, file: str, line: int | None) -> str:
        text = getattr(exc, "message", None) or str(exc)
        source_line = _source_line(self.templates_dir.parent / file, line)
        if isinstance(exc, UndefinedError):
            m = re.match(r"'(.+?)' is undefined", text)
            a = re.match(r"'(.+?)' has no attribute '(.+?)'", text)
            if m:
                text = f"`{m.group(1)}` is not defined"
            elif a:
                owner = re.search(rf"([A-Za-z_][\w.]*)\.{re.escape(a.group(2))}\b", source_line)
                name = f"{owner.group(1)}.{a.group(2)}" if owner else a.group(2)
                text = f"`{name}` is not defined (no field `{a.group(2)}` in {a.group(1)})"
            text = f"undefined variable: {text}. You can use: {CONTEXT_NAMES}"
        elif isinstance(exc, SecurityError):
            text = f"not allowed in a template: {text}"
        elif isinstance(exc, TemplateSyntaxError):
            text = f"template syntax error: {text}"
        else:
            text = f"{type(exc).__name__}: {text}"
        return f"{text}{f'  [in: {source_line}]' if source_line else ''}"

    # ---- rendering -------------------------------------------------------

    def _run(self, tpl: Template | _Field, variables: dict[str, Any], default_file: str) -> str:
        """Render with a shared context (no copy of ``variables``: half the cost of Template.render)."""
        if isinstance(tpl, _Field):
            if tpl.template is None:
                return tpl.static
            template, default_file = tpl.template, tpl.file
        else:
            template = tpl
        try:
            try:
                # = template.new_context(variables, shared=True) minus copying the globals' keys, which
                # only {% import %} reads and which are empty here (env.globals holds `range` only)
                context = template.environment.context_class(
                    template.environment, variables, template.name, template.blocks
                )
                return "".join(template.root_render_func(context))
            except Exception:
                template.environment.handle_exception()  # re-raises with template lines in the traceback
                raise
        except (TemplateError, SecurityError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise self._error(exc, default_file) from None
        except RecursionError as exc:
            raise RenderError("the template recurses too deeply", default_file) from exc

    def _value(self, f: _Field, variables: dict[str, Any], key: int | None, one_line: bool = False) -> str:
        """A field's text; offer-only fields are rendered once per ``key`` (message locale + offer),
        fields that also read the first name once per ``key`` and first name."""
        if f.template is None:
            return _one_line(f.static) if one_line else f.static
        if key is None or not f.per_name:
            text = self._run(f, variables, f.file)
            return _one_line(text) if one_line else text
        cache_key = (
            (id(f), one_line, key) if f.offer_only else (id(f), one_line, key, variables["first_name"])
        )
        text = self._static.get(cache_key)
        if text is None:  # a RenderError is raised, never cached
            text = self._run(f, variables, f.file)
            text = self._store(cache_key, _one_line(text) if one_line else text)
        return text

    def _store(self, cache_key: tuple, value: Any) -> Any:
        """Keep a text (or content dict) that many recipients share; the lookup stays inline at each
        caller (a call per hit costs about 5 % of a render)."""
        if len(self._static) >= STATIC_CACHE_MAX:
            self._static.clear()  # a bound on memory; the texts are rendered again when needed
        self._static[cache_key] = value
        return value

    def _texts(self, compiled: _Message, locale: str | None) -> tuple[str, _LocaleTexts]:
        for lang in (language_of(locale, self.default_locale), language_of(self.default_locale)):
            if lang in compiled.locales:
                return lang, compiled.locales[lang]
        lang = next(iter(compiled.locales))
        return lang, compiled.locales[lang]

    def _locale(self, compiled: _Message, locale: str | None) -> tuple[str, _LocaleTexts, LocaleHelpers]:
        """Language section and Babel helpers for a customer locale, memoized per (message, locale)."""
        found = self._locales.get((compiled.name, locale))
        if found is None:
            lang, texts = self._texts(compiled, locale)
            own_locale = locale or self.default_locale
            helpers = helpers_for(own_locale if language_of(own_locale) == lang else lang)
            found = self._locales[(compiled.name, locale)] = (lang, texts, helpers)
        return found

    def _base(
        self, compiled: _Message, ctx: RenderContext
    ) -> tuple[dict[str, Any], _LocaleTexts, str, int | None]:
        customer = ctx.customer
        lang, texts, helpers = self._locale(compiled, customer.get("locale"))
        first_name = (customer.get("first_name") or "").strip()
        variables: dict[str, Any] = {
            "customer": customer,
            "features": ctx.features,
            "offer": ctx.offer,
            "variant": ctx.variant,
            "campaign": ctx.campaign,
            "recommendations": ctx.recommendations,
            "ledger_id": ctx.ledger_id,
            "locale": lang,
            "first_name": first_name,
            "greeting": helpers.greeting(first_name),
            "sender": self.sender,
            **helpers.globals(),
        }
        offer = ctx.offer
        # the offer's content with value types (True == 1 in Python); hashed once, in the lookup
        # below (a TypeError there: a value is not hashable, nothing is cached); the per-field
        # cache keys then hold a small int
        full = (
            helpers.locale_name,
            lang,
            tuple(offer.items()),
            tuple(map(type, offer.values())),
            ctx.variant,
            ctx.campaign,
        )
        try:
            key = self._keys.get(full)
        except TypeError:
            key = full = None
        if key is None and full is not None:
            if len(self._keys) >= STATIC_CACHE_MAX:
                self._keys.clear()
                self._static.clear()
            key = self._keys[full] = next(self._key_ids)  # never reused, even after a clear
        if compiled.link is not None:
            target = self._value(compiled.link, variables, key).strip()
        else:
            target = str(ctx.offer.get("url") or "")
        variables["link"] = target
        if key is not None and texts.shared_per_name:
            # the whole `content` dict is the same for customers of an offer with the same first name;
            # sharing one dict is safe: templates cannot change it (immutable sandbox) and we never do
            cache_key = (id(texts), "content", key, first_name)
            content = self._static.get(cache_key)
            if content is None:
                content = {k: self._value(f, variables, key) for k, f in texts.shared.items()}
                content = self._store(cache_key, content)
            variables["content"] = content
        else:
            variables["content"] = {k: self._value(f, variables, key) for k, f in texts.shared.items()}
        return variables, texts, target, key

    def render(
        self, message: str, channel: str, ctx: RenderContext
    ) -> RenderedEmail | RenderedSms | RenderedPush:
        """Render one channel of ``message`` for one recipient; raises RenderError."""
        return self.render_all(message, [channel], ctx)[channel]

    def render_all(
        self, message: str, channels: list[str] | tuple[str, ...], ctx: RenderContext
    ) -> dict[str, RenderedEmail | RenderedSms | RenderedPush]:
        """Render several channels sharing one context (the shared content is rendered once)."""
        compiled = self._compile(message)
        for channel in channels:
            if channel not in compiled.channels:
                raise RenderError(
                    f"message `{message}` has no {channel} rendering (it has: {', '.join(compiled.channels)})",  # noqa: E501
                    compiled.shown,
                )
        variables, texts, target, key = self._base(compiled, ctx)
        links = Links(ctx.ledger_id, self.base_url, self._secret, self.links)
        out: dict[str, RenderedEmail | RenderedSms | RenderedPush] = {}
        for channel in channels:
            if channel == "email":
                out[channel] = self._email(compiled, texts, variables, links, ctx, key)
            elif channel == "sms":
                out[channel] = self._sms(compiled, texts, variables, links, target, ctx, key)
            else:
                out[channel] = self._push(compiled, texts, variables, links, target, ctx, key)
        return out

    def _email(
        self, compiled: _Message, texts: _LocaleTexts, variables: dict, links: Links, ctx, key
    ) -> RenderedEmail:
        subject = self._value(texts.email["subject"], variables, key, one_line=True)
        pre = texts.email.get("preheader")
        preheader = self._value(pre, variables, key, one_line=True) if pre else ""
        unsubscribe = links.unsubscribe()
        email_vars = {
            **variables,
            "subject": subject,
            "preheader": preheader,
            "unsubscribe_url": unsubscribe,
            "open_pixel_url": links.open_pixel(),
            "track": links.track,
        }
        assert compiled.html is not None and compiled.text is not None
        html = self._run(compiled.html, email_vars, compiled.html_file)
        text_vars = {**email_vars, "link": links.click(variables["link"]) if variables["link"] else ""}
        text = self._run(compiled.text, text_vars, compiled.text_file)
        headers = unsubscribe_headers(unsubscribe, self.mailto, ctx.ledger_id)
        return RenderedEmail(subject, preheader, html, text, headers, ctx.customer.get("email"))

    def _sms_text(self, f: _Field, variables: dict[str, Any]) -> str:
        """The SMS text before the STOP mention: rendered, stripped, normalized to GSM-7 typography."""
        text = sms_encoding.normalize(self._run(f, variables, f.file).strip())
        if "  " in text or "\t" in text:  # a scan in C; the regex alone costs microseconds per SMS
            text = _SPACES.sub(" ", text)
        return text

    def _sms(
        self, compiled: _Message, texts: _LocaleTexts, variables, links: Links, target, ctx, key
    ) -> RenderedSms:
        f = texts.sms
        assert f is not None
        link = links.short(target) if target else ""
        if key is None or f.template is None or not (f.per_name or (f.link_slot and link)):
            text = self._sms_text(f, {**variables, "link": link})
        else:
            # The same text for every customer of this offer and first name, but for the link:
            # rendered and normalized once with a placeholder, which the link then replaces. Exact,
            # because the field only prints `link` (no test or filter reads it) and a non-empty
            # link (an ASCII URL, no spaces) is left as is by strip/normalize/space folding.
            cache_key = (id(f), "sms", key, variables["first_name"])
            text = self._static.get(cache_key)
            if text is None:  # errors are not cached
                text = self._store(cache_key, self._sms_text(f, {**variables, "link": _LINK_SLOT}))
            if f.link_slot:
                text = text.replace(_LINK_SLOT, link)
        if compiled.marketing:
            text = sms_encoding.with_stop_mention(text, self.stop_mention)
        encoding, _length, segments, ucs2 = sms_encoding.measure(text)
        return RenderedSms(text, encoding, segments, ucs2, ctx.customer.get("phone"))

    def _push(
        self, compiled: _Message, texts: _LocaleTexts, variables, links: Links, target, ctx, key
    ) -> RenderedPush:
        title = self._value(texts.push["title"], variables, key, one_line=True)
        body = self._value(texts.push["body"], variables, key, one_line=True)
        if "deep_link" in texts.push:
            deep_link = self._value(texts.push["deep_link"], variables, key).strip()
        elif compiled.deep_link is not None:
            deep_link = self._value(compiled.deep_link, variables, key).strip()
        else:
            deep_link = target
        data = {
            "campaign": ctx.campaign,
            "variant": ctx.variant,
            "ledger_id": str(ctx.ledger_id),
            "message": compiled.name,
        }
        if target:
            data["url"] = links.click(target)
        return RenderedPush(title, body, deep_link, data, None)

    def _file_of(self, template: Template) -> str:
        return self._display(template.filename or template.name or "?")

    # ---- validation ------------------------------------------------------

    def check(
        self,
        message: str,
        channels: list[str] | tuple[str, ...],
        offer: dict[str, Any],
        samples: list[RenderContext],
    ) -> list[Problem]:
        """Everything `relance validate` reports for one message, rendered for each sample customer."""
        problems: list[Problem] = []

        def add(problem: Problem) -> None:
            if problem not in problems:
                problems.append(problem)

        try:
            compiled = self._compile(message)
        except RenderError as exc:
            return [exc.problem()]
        shown = compiled.shown
        wanted = [c for c in channels if c in compiled.channels]
        for channel in channels:
            if channel not in compiled.channels:
                add(
                    Problem(
                        shown, None, f"no {channel} rendering: add {channel} to `channels:` and its texts"
                    )
                )
        for sample in samples:
            ctx = replace(sample, offer=offer)
            try:
                rendered = self.render_all(message, wanted, ctx)
            except RenderError as exc:
                add(exc.problem())
                continue
            lang, texts = self._texts(compiled, ctx.customer.get("locale"))
            sms = rendered.get("sms")
            if isinstance(sms, RenderedSms) and sms.segments > self.max_segments:
                line = texts.sms.line if texts.sms else None
                add(
                    Problem(
                        shown,
                        line,
                        f"SMS ({lang}) is {sms.segments} segments ({sms.encoding}), above the "
                        f"limit of {self.max_segments} (settings.sms_max_segments): shorten it"
                        + (
                            f"; these characters force UCS-2: {' '.join(sms.ucs2_chars)}"
                            if sms.ucs2_chars
                            else ""
                        ),
                    )
                )
            push = rendered.get("push")
            if isinstance(push, RenderedPush):
                for text in push.problems():
                    add(Problem(shown, texts.push["title"].line, f"{text} ({lang})"))
            if len(rendered) > 1:
                helpers = helpers_for(ctx.customer.get("locale") or lang)
                mismatch = consistency(rendered, offer, lang, helpers, self.links)
                if mismatch:
                    add(Problem(shown, None, f"channels disagree for a {lang} customer:\n{mismatch}"))
        return problems


_BREAKS = re.compile(r"[ \t\r\n]+")
_SPACES = re.compile(r"[ \t]+")


_LINK_SLOT = "\ue000link\ue001"  # private-use characters: no template writes them


def _printed_only(tree: nodes.Template, name: str) -> bool:
    """Whether every use of the variable ``name`` is printed as is (``{{ name }}``) at the top level
    of the template: never tested, filtered, sliced, passed or assigned, nor inside a block whose
    output something else captures or transforms ({% filter %}, {% set %}...), so its value cannot
    change anything else in the text."""
    printed = {
        id(child)
        for output in tree.body
        if isinstance(output, nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Name) and child.name == name
    }
    return all(id(node) in printed for node in tree.find_all(nodes.Name) if node.name == name)


def _one_line(text: str) -> str:
    """Collapse line breaks and runs of ASCII spaces; keep Babel's no-break spaces (12,50 €)."""
    return _BREAKS.sub(" ", text).strip()


def _source_line(path: Path, line: int | None) -> str:
    if not line:
        return ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    return lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""


# --------------------------------------------------------------------------
# Consistency across channels
# --------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")
_MONEY = re.compile(r"(?:€ ?\d[\d ,.]*\d|\d(?:[\d ,.]*\d)? ?(?:€|EUR\b|euros?\b))")
_HREF = re.compile(r"""href=["']([^"']+)["']""")


def channel_texts(
    rendered: dict[str, Any], links: LinkRegistry | None = None
) -> dict[str, tuple[str, list[str]]]:
    """Visible text and link targets (before tracking) of each rendered channel; ``links`` resolves
    SMS short links."""
    out: dict[str, tuple[str, list[str]]] = {}
    for r in rendered.values():
        if isinstance(r, RenderedEmail):
            visible = html_lib.unescape(
                _TAG.sub(" ", re.sub(r"<head.*?</head>", " ", r.html, flags=re.DOTALL))
            )
            hrefs = " ".join(html_lib.unescape(h) for h in _HREF.findall(r.html))
            out["email"] = (f"{r.subject} {r.preheader} {visible}", click_targets(hrefs))
            out["email text"] = (r.text, click_targets(r.text))
        elif isinstance(r, RenderedSms):
            out["sms"] = (r.text, click_targets(r.text, links))
        elif isinstance(r, RenderedPush):
            targets = click_targets(r.data.get("url", ""))
            out["push"] = (f"{r.title} {r.body}", [r.deep_link, *targets])
    return out


def consistency(
    rendered: dict[str, Any],
    offer: dict[str, Any],
    lang: str,
    helpers: Any,
    links: LinkRegistry | None = None,
) -> str:
    """An aligned side-by-side table when channels differ in code, price or link; '' when they agree."""
    views = channel_texts(rendered, links)
    rows: list[tuple[str, dict[str, str]]] = []
    ok = True
    if offer.get("code"):
        code = str(offer["code"])
        cells = {c: (code if code in text else "MISSING") for c, (text, _) in views.items()}
        ok &= all(v == code for v in cells.values())
        rows.append((f"code {code}", cells))
    if offer.get("price") is not None:
        expected = sms_encoding.normalize(helpers.money(offer["price"]))
        cells = {}
        for c, (text, _) in views.items():
            flat = sms_encoding.normalize(text)
            if expected in flat:
                cells[c] = expected
            else:
                ok = False
                found = sorted(set(_MONEY.findall(flat)))
                cells[c] = f"MISSING ({', '.join(found)})" if found else "MISSING"
        rows.append((f"price {expected}", cells))
    if offer.get("url"):
        url = str(offer["url"])
        cells = {
            c: (url if url in targets else f"OTHER: {', '.join(targets) or 'none'}")
            for c, (_, targets) in views.items()
        }
        ok &= all(v == url for v in cells.values())
        rows.append(("link", cells))
    if ok:
        return ""
    columns = list(views)
    widths = [max(len("what"), *(len(r[0]) for r in rows))] + [
        max(len(c), *(len(r[1].get(c, "")) for r in rows)) for c in columns
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(["what", *columns], widths, strict=True))]
    for label, cells in rows:
        values = [label, *(cells.get(c, "") for c in columns)]
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)))
    return "\n".join(lines)
