"""SMS encoding, segment count and cost: GSM 03.38 (7-bit) or UCS-2.

Why our own code: the rules are short and fixed by the standard (3GPP TS 23.038), and the
PyPI helpers we looked at either ignore the extension table or do not report which characters
force UCS-2, which is what a marketer needs to fix a text.

A single non-GSM character turns the whole message into UCS-2: 70 characters a segment
instead of 160. Typography that Babel and word processors add (U+202F/U+00A0 spaces,
’ “ ” « » quotes, …, – —) is normalized to GSM equivalents first; real letters that are
not GSM (ê, â, î, ô, û, ë, ï, ç, œ...) are kept and reported.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field

# GSM 03.38 basic table (ESC 0x1B excluded: it introduces the extension table).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: each costs 2 septets (ESC + char).
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM_ALL = GSM_BASIC | GSM_EXTENSION

GSM_SINGLE, GSM_MULTI = 160, 153  # septets
UCS2_SINGLE, UCS2_MULTI = 70, 67  # UTF-16 code units

_SPACES = "\u00a0\u202f\u2009\u2007\u2002\u2003\u2004\u2005\u2006\u2008\u200a\u205f\u3000"
_TRANSLATE = str.maketrans(
    {
        **{c: " " for c in _SPACES},
        "\u200b": "",  # zero-width space
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2026": "...",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2022": "-",
    }
)
# Guillemets take the spaces inside them (« Oui » -> "Oui"); the other characters are replaced one
# by one. Why this shape: a single regex with a `\s*»` branch is tried at every position of the
# text (slow); splitting on » and stripping, then a plain character class scanned in C and
# called back only on its few matches, gives the same text in about half the time.
_OPEN_GUILLEMET = re.compile(r"«\s*")  # \s: Unicode whitespace, as str.rstrip() (NBSP, U+202F...)
_REPLACE = {chr(k): v for k, v in _TRANSLATE.items()}
_SINGLE = re.compile("[" + "".join(re.escape(c) for c in _REPLACE) + "]")


def _replacement(match: re.Match[str]) -> str:
    return _REPLACE[match.group()]


def normalize(text: str) -> str:
    """Replace typography that would needlessly force UCS-2; « guillemets » become "quotes"."""
    if "»" in text:
        parts = text.split("»")
        last = parts.pop()
        text = '"'.join([p.rstrip() for p in parts] + [last])
    if "«" in text:
        text = _OPEN_GUILLEMET.sub('"', text)
    return _SINGLE.sub(_replacement, text)


@dataclass(frozen=True)
class SmsInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    length: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    ucs2_chars: list[str] = field(default_factory=list)  # distinct characters that forced UCS-2


def ucs2_chars(text: str) -> list[str]:
    """The distinct characters of ``text`` outside GSM-7 (basic + extension), in order of appearance."""
    if GSM_ALL.issuperset(text):
        return []
    return [ch for ch in dict.fromkeys(text) if ch not in GSM_ALL]


_EXTENSION_RE = re.compile("[" + "".join(re.escape(c) for c in GSM_EXTENSION) + "]")


def _gsm_segments(text: str) -> tuple[int, int]:
    extension = [m.start() for m in _EXTENSION_RE.finditer(text)]
    septets = len(text) + len(extension)
    if septets <= GSM_SINGLE:
        return septets, 1 if text else 0
    if not extension:
        return septets, -(-septets // GSM_MULTI)
    return septets, _split(len(text), extension, GSM_MULTI)


def _ucs2_segments(text: str) -> tuple[int, int]:
    astral = [i for i, ch in enumerate(text) if ch > "\uffff"] if max(text, default="") > "\uffff" else []
    units = len(text) + len(astral)
    if units <= UCS2_SINGLE:
        return units, 1 if text else 0
    if not astral:
        return units, -(-units // UCS2_MULTI)
    return units, _split(len(text), astral, UCS2_MULTI)


def _split(length: int, doubles: list[int], per_segment: int) -> int:
    """Segments of a text of ``length`` characters where those at ``doubles`` (sorted indexes) take
    two units and are never split (GSM escape pairs, UTF-16 surrogate pairs): each segment takes as
    many characters as fit, as a phone does."""
    segments, start = 0, 0
    while start < length:
        segments += 1
        end = min(start + per_segment, length)
        units = (end - start) + bisect_left(doubles, end) - bisect_left(doubles, start)
        while units > per_segment:
            end -= 1
            units -= 2 if doubles and _contains(doubles, end) else 1
        start = end
    return segments


def _contains(sorted_items: list[int], value: int) -> bool:
    i = bisect_left(sorted_items, value)
    return i < len(sorted_items) and sorted_items[i] == value


_NOT_GSM = re.compile("[^" + "".join(re.escape(c) for c in sorted(GSM_ALL)) + "]")


def analyze(text: str) -> SmsInfo:
    """Encoding and segment count of ``text`` as it will be sent (normalize it first)."""
    return SmsInfo(*measure(text))


def measure(text: str) -> tuple[str, int, int, list[str]]:
    """analyze() as a tuple (encoding, length, segments, ucs2_chars), for the per-message path.

    Why: a GSM-7 text is recognized by one regex scan in C (no character outside the table) and
    a one-segment text needs only its length and the count of extension characters."""
    if _NOT_GSM.search(text) is None:
        septets = len(text) + len(_EXTENSION_RE.findall(text))
        if septets <= GSM_SINGLE:
            return "GSM-7", septets, 1 if text else 0, []
        septets, segments = _gsm_segments(text)
        return "GSM-7", septets, segments, []
    units, segments = _ucs2_segments(text)
    return "UCS-2", units, segments, ucs2_chars(text)


def cost(segments: int, price_per_segment: float | None = None) -> float:
    """Estimated cost in euros: segments x settings.sms_price_per_segment."""
    if price_per_segment is None:
        from core.settings import get_settings

        price_per_segment = get_settings().sms_price_per_segment
    return round(segments * price_per_segment, 6)


def with_stop_mention(text: str, mention: str) -> str:
    """Append the opt-out mention French law requires on marketing SMS (once)."""
    text = text.rstrip()
    if not mention or mention.lower() in text.lower():
        return text
    return f"{text}\n{mention}"
