"""One offer, every channel: the same code, price and link in the e-mail, the SMS and the push.

`relance validate` and `relance preview` render a message for each channel and compare what a
customer would read; a mismatch is shown as an aligned side-by-side table.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Any

from channels import sms_encoding
from channels.email_message import RenderedEmail
from channels.push_message import RenderedPush
from channels.sms_message import RenderedSms
from channels.tracking_links import LinkRegistry, click_targets

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
    return _table(list(views), rows)


def _table(columns: list[str], rows: list[tuple[str, dict[str, str]]]) -> str:
    """Rows of (label, cell per channel) as aligned plain-text columns under a header."""
    widths = [max(len("what"), *(len(r[0]) for r in rows))] + [
        max(len(c), *(len(r[1].get(c, "")) for r in rows)) for c in columns
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(["what", *columns], widths, strict=True))]
    for label, cells in rows:
        values = [label, *(cells.get(c, "") for c in columns)]
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)))
    return "\n".join(lines)
