"""One message, every channel: render a template folder for e-mail, SMS and push.

A message is a folder under templates/ (see templates/README.md); channels/content.py compiles
it, once. This module renders it per recipient and channel and caches what recipients share;
channels/render_errors.py tells a template's failure in the marketer's words;
channels/message_check.py and channels/consistency.py judge what `relance validate` reports.
The names the rest of the project imports from here (Renderer, RenderContext, RenderError,
Problem, the Rendered* types, channel_texts, consistency, CHANNELS...) stay importable from here.

Contract with the send flow: ``Renderer.render``/``render_all`` raise ``RenderError`` for ONE
message (template error, undefined variable, sandbox violation). The caller records the error
on that ledger row and goes on with the batch; nothing here raises anything else for a
template's fault. A Renderer is thread-safe for rendering and compiles each message once:
create one per process (or per flow run) and reuse it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.sandbox import SecurityError

from channels import sms_encoding
from channels.consistency import channel_texts, consistency
from channels.content import (
    CHANNELS,
    CONTENT_FILE,
    LAYOUT_HTML,
    LAYOUT_TEXT,
    NAME_NAMES,
    OFFER_ONLY_NAMES,
    TOP_KEYS,
    Field,
    LocaleTexts,
    Message,
    MessageLoader,
)
from channels.email_message import RenderedEmail, unsubscribe_headers
from channels.message_check import missing_channels, sample_problems
from channels.push_message import RenderedPush
from channels.render_errors import CONTEXT_NAMES, ErrorLocator, Problem, RenderError
from channels.sms_message import RenderedSms
from channels.template_env import LocaleHelpers, helpers_for, language_of, make_environment
from channels.tracking_links import LinkRegistry, Links

__all__ = [
    "CHANNELS",
    "CONTENT_FILE",
    "CONTEXT_NAMES",
    "LAYOUT_HTML",
    "LAYOUT_TEXT",
    "NAME_NAMES",
    "OFFER_ONLY_NAMES",
    "STATIC_CACHE_MAX",
    "TOP_KEYS",
    "Problem",
    "RenderContext",
    "RenderError",
    "RenderedEmail",
    "RenderedPush",
    "RenderedSms",
    "Renderer",
    "channel_texts",
    "consistency",
]

STATIC_CACHE_MAX = 50_000


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


class Renderer:
    """Renders each compiled message per recipient and channel, caching the texts recipients share."""

    def __init__(self, templates_dir: Path | None = None, links: LinkRegistry | None = None) -> None:
        """``links``: where SMS short links get their link ids (channels.tracking_links.DbLinkRegistry
        to send, MemoryLinkRegistry for previews); None keeps the long signed click URL in SMS."""
        from core.settings import get_settings

        settings = get_settings()
        self.templates_dir = Path(templates_dir or settings.templates_dir)
        self.env = make_environment(self.templates_dir)
        self.errors = ErrorLocator(self.templates_dir, self.env)
        self.loader = MessageLoader(self.templates_dir, self.env, self.errors)
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
        # offer-only texts (field, one_line, key id[, first name]), SMS texts and `content` dicts
        self._static: dict[tuple, Any] = {}
        self._keys: dict[tuple, int] = {}  # (locale, language, offer, variant, campaign) -> key id
        self._key_ids = itertools.count(1)
        self._locales: dict[tuple[str, str | None], tuple[str, LocaleTexts, LocaleHelpers]] = {}

    def exists(self, message: str) -> bool:
        return self.loader.exists(message)

    def channels_of(self, message: str) -> list[str]:
        return list(self.loader.compile(message).channels)

    def check(
        self,
        message: str,
        channels: list[str] | tuple[str, ...],
        offer: dict[str, Any],
        samples: list[RenderContext],
    ) -> list[Problem]:
        """Everything `relance validate` reports for one message, rendered for each sample customer."""
        try:
            compiled = self.loader.compile(message)
        except RenderError as exc:
            return [exc.problem()]
        problems: list[Problem] = []

        def add(found: list[Problem]) -> None:
            for problem in found:
                if problem not in problems:
                    problems.append(problem)

        add(missing_channels(compiled, channels))
        wanted = [c for c in channels if c in compiled.channels]
        for sample in samples:
            ctx = replace(sample, offer=offer)
            try:
                rendered = self.render_all(message, wanted, ctx)
            except RenderError as exc:
                add([exc.problem()])
                continue
            locale = ctx.customer.get("locale")
            add(
                sample_problems(
                    compiled, rendered, locale, offer, self.default_locale, self.max_segments, self.links
                )
            )
        return problems

    # ---- rendering -------------------------------------------------------

    def _run(self, tpl: Template | Field, variables: dict[str, Any], default_file: str) -> str:
        """Render with a shared context (no copy of ``variables``: half the cost of Template.render)."""
        if isinstance(tpl, Field):
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
            raise self.errors.error(exc, default_file) from None
        except RecursionError as exc:
            raise RenderError("the template recurses too deeply", default_file) from exc

    def _value(self, f: Field, variables: dict[str, Any], key: int | None, one_line: bool = False) -> str:
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

    def _locale(self, compiled: Message, locale: str | None) -> tuple[str, LocaleTexts, LocaleHelpers]:
        """Language section and Babel helpers for a customer locale, memoized per (message, locale)."""
        found = self._locales.get((compiled.name, locale))
        if found is None:
            lang, texts = compiled.texts_for(locale, self.default_locale)
            own_locale = locale or self.default_locale
            helpers = helpers_for(own_locale if language_of(own_locale) == lang else lang)
            found = self._locales[(compiled.name, locale)] = (lang, texts, helpers)
        return found

    def _base(
        self, compiled: Message, ctx: RenderContext
    ) -> tuple[dict[str, Any], LocaleTexts, str, int | None]:
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
        compiled = self.loader.compile(message)
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
        self, compiled: Message, texts: LocaleTexts, variables: dict, links: Links, ctx, key
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

    def _sms_text(self, f: Field, variables: dict[str, Any]) -> str:
        """The SMS text before the STOP mention: rendered, stripped, normalized to GSM-7 typography."""
        text = sms_encoding.normalize(self._run(f, variables, f.file).strip())
        if "  " in text or "\t" in text:  # a scan in C; the regex alone costs microseconds per SMS
            text = _SPACES.sub(" ", text)
        return text

    def _sms(
        self, compiled: Message, texts: LocaleTexts, variables, links: Links, target, ctx, key
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
        self, compiled: Message, texts: LocaleTexts, variables, links: Links, target, ctx, key
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


_BREAKS = re.compile(r"[ \t\r\n]+")
_SPACES = re.compile(r"[ \t]+")
_LINK_SLOT = "\ue000link\ue001"  # private-use characters: no template writes them


def _one_line(text: str) -> str:
    """Collapse line breaks and runs of ASCII spaces; keep Babel's no-break spaces (12,50 €)."""
    return _BREAKS.sub(" ", text).strip()
