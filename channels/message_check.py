"""What `relance validate` reports about one message rendered for a sample customer.

Apart from template errors (RenderError, raised by the Renderer): a channel the campaign wants
and the message lacks, an SMS above the segment limit (and the characters forcing UCS-2), a
push text too long to show, channels that disagree on the offer's code, price or link.
"""

from __future__ import annotations

from typing import Any

from channels.consistency import consistency
from channels.content import Message
from channels.push_message import RenderedPush
from channels.render_errors import Problem
from channels.sms_message import RenderedSms
from channels.template_env import helpers_for
from channels.tracking_links import LinkRegistry


def missing_channels(compiled: Message, channels: list[str] | tuple[str, ...]) -> list[Problem]:
    return [
        Problem(compiled.shown, None, f"no {channel} rendering: add {channel} to `channels:` and its texts")
        for channel in channels
        if channel not in compiled.channels
    ]


def sample_problems(
    compiled: Message,
    rendered: dict[str, Any],
    locale: str | None,
    offer: dict[str, Any],
    default_locale: str,
    max_segments: int,
    links: LinkRegistry | None,
) -> list[Problem]:
    """The problems of one sample customer's rendering (``locale``: the customer's)."""
    shown = compiled.shown
    lang, texts = compiled.texts_for(locale, default_locale)
    problems: list[Problem] = []
    sms = rendered.get("sms")
    if isinstance(sms, RenderedSms) and sms.segments > max_segments:
        line = texts.sms.line if texts.sms else None
        problems.append(Problem(shown, line, _too_long(sms, lang, max_segments)))
    push = rendered.get("push")
    if isinstance(push, RenderedPush):
        for text in push.problems():
            problems.append(Problem(shown, texts.push["title"].line, f"{text} ({lang})"))
    if len(rendered) > 1:
        mismatch = consistency(rendered, offer, lang, helpers_for(locale or lang), links)
        if mismatch:
            problems.append(Problem(shown, None, f"channels disagree for a {lang} customer:\n{mismatch}"))
    return problems


def _too_long(sms: RenderedSms, lang: str, max_segments: int) -> str:
    ucs2 = f"; these characters force UCS-2: {' '.join(sms.ucs2_chars)}" if sms.ucs2_chars else ""
    return (
        f"SMS ({lang}) is {sms.segments} segments ({sms.encoding}), above the "
        f"limit of {max_segments} (settings.sms_max_segments): shorten it{ucs2}"
    )
