"""An e-mail template's source prepared once, before Jinja compiles it: CSS inlined, links tracked.

Why CSS is inlined in the loader: e-mail clients ignore ``<style>`` (Gmail apps, Outlook), so
styles must be inline, and inlining (premailer) costs milliseconds. The CSS is static, so the
loader inlines each ``*.html.j2`` source ONCE, before Jinja compiles it; rendering a message is
then Jinja only. Jinja tags are swapped for inert placeholders while premailer parses the HTML.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader

STYLESHEET = "_layout/email.css"

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"RLNCJ(\d+)X")


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
