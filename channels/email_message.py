"""A rendered e-mail: bulk-sender headers and the MIME message (links are tracked at compile time,
see channels.template_env.track_anchors).

Headers follow what Gmail and Yahoo require of bulk senders since 2024: ``List-Unsubscribe``
with an HTTPS one-click URL and a mailto, and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058). The MIME message is built with the standard library
(EmailMessage, multipart/alternative: text first, HTML last as RFC 2046 asks).

``to_bytes()`` writes the same message directly (about 2 ms -> tens of microseconds): the send
path makes millions of them and the stdlib's policy-driven generator would cap a worker at ~500
e-mails a second. Headers are RFC 2047-encoded only when not ASCII, bodies are UTF-8 8bit (or
quoted-printable when a line is too long for 8bit, or when asked), lines end with CRLF (RFC 5322).
"""

from __future__ import annotations

import secrets
import time
from binascii import b2a_base64, b2a_qp
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322 "SHOULD" for header lines; bodies may go to 998 octets in 8bit
MAX_8BIT_LINE = 998


def unsubscribe_headers(unsubscribe_url: str, mailto: str, ledger_id: int) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers; the mailto subject carries the ledger id for manual handling."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{mailto}?subject=unsubscribe-{ledger_id}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@dataclass
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    to: str | None = None

    def to_mime(self, sender: str | Address | None = None) -> EmailMessage:
        """The message to hand to SMTP or write as .eml. ``sender`` defaults to the settings' identity."""
        if sender is None:
            from core.settings import get_settings

            settings = get_settings()
            sender = formataddr((settings.sender_name, settings.sender_email))
        msg = EmailMessage()
        msg["Subject"] = self.subject
        msg["From"] = sender
        if self.to:
            msg["To"] = self.to
        domain = str(sender).rsplit("@", 1)[-1].strip(">") if "@" in str(sender) else None
        msg["Message-ID"] = make_msgid(domain=domain)
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text, subtype="plain", charset="utf-8")
        msg.add_alternative(self.html, subtype="html", charset="utf-8")
        return msg

    def to_bytes(
        self,
        sender: str | None = None,
        transfer_encoding: str = "8bit",
        to: str | None = None,
        extra_headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> bytes:
        """The RFC 5322 message as bytes (CRLF line ends), as to_mime() would serialize it, fast.

        ``sender`` defaults to the settings' identity; ``to`` replaces ``self.to``; ``extra_headers``
        are added after ours (e.g. X-Relance-Ledger-Id). ``transfer_encoding``: "8bit" (default;
        SMTP needs the 8BITMIME extension, which current servers offer) or "quoted-printable"
        (7-bit clean). A body with a line over 998 octets goes quoted-printable either way.
        """
        if sender is None:
            sender = _default_sender()
        domain = sender.rsplit("@", 1)[-1].strip(">") if "@" in sender else None
        boundary = f"=_rl{secrets.token_hex(12)}"  # "=_" never occurs in QP and is unlikely in 8bit text
        head = [
            header_line("From", sender),
            header_line("To", to or self.to) if (to or self.to) else "",
            header_line("Subject", self.subject),
            f"Date: {_date_now()}{CRLF}",
            f"Message-ID: {message_id or make_msgid(domain=domain)}{CRLF}",
            *(header_line(name, value) for name, value in self.headers.items()),
            *(header_line(name, value) for name, value in (extra_headers or {}).items()),
            f"MIME-Version: 1.0{CRLF}",
            f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}',
        ]
        text, text_cte = _body(self.text, transfer_encoding)
        html, html_cte = _body(self.html, transfer_encoding)
        delimiter = f"{CRLF}--{boundary}{CRLF}".encode("ascii")
        return b"".join(
            [
                "".join(head).encode("ascii"),
                f"{CRLF}This is a multi-part message in MIME format.".encode("ascii"),
                delimiter,
                f'Content-Type: text/plain; charset="utf-8"{CRLF}'
                f"Content-Transfer-Encoding: {text_cte}{CRLF}{CRLF}".encode("ascii"),
                text,
                delimiter,
                f'Content-Type: text/html; charset="utf-8"{CRLF}'
                f"Content-Transfer-Encoding: {html_cte}{CRLF}{CRLF}".encode("ascii"),
                html,
                f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
            ]
        )


_last_date: tuple[int, str] = (0, "")


def _date_now() -> str:
    """RFC 5322 Date of the current second (formatted once a second, not once a message)."""
    global _last_date
    second = int(time.time())
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, usegmt=True))
    return _last_date[1]


def _default_sender() -> str:
    from core.settings import get_settings

    settings = get_settings()
    return formataddr((settings.sender_name, settings.sender_email))


def _body(text: str, transfer_encoding: str) -> tuple[bytes, str]:
    """A text part's bytes (CRLF line ends, ending with one) and its Content-Transfer-Encoding."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"  # as EmailMessage.set_content does
    data = text.replace("\n", CRLF).encode("utf-8")
    if transfer_encoding == "8bit" and max(map(len, data.split(b"\r\n"))) <= MAX_8BIT_LINE:
        return data, "8bit"
    return b2a_qp(data, istext=True), "quoted-printable"


def header_line(name: str, value: str) -> str:
    """``Name: value`` + CRLF; RFC 2047 base64 encoded-words when the value is not ASCII, folded.

    Own code rather than email.header.Header: that one costs ~80 us a header, and every e-mail
    has a non-ASCII subject in French. Addresses (``Name <a@b>``) encode only the display name.
    """
    if "\n" in value or "\r" in value:  # no raw line breaks in a header (other spaces are kept)
        value = " ".join(value.splitlines())
    if value.isascii():
        return _fold_ascii(f"{name}: {value}")
    if name in ("From", "To", "Reply-To", "Cc") and value.endswith(">") and " <" in value:
        display, address = value.rsplit(" <", 1)
        return f"{name}: {_encoded_words(display.strip().strip(chr(34)), len(name) + 2)} <{address}{CRLF}"
    return f"{name}: {_encoded_words(value, len(name) + 2)}{CRLF}"


def _fold_ascii(line: str) -> str:
    """Fold a long ASCII header line at ", " (structured lists) or spaces, keeping lines short."""
    if len(line) <= MAX_LINE:
        return line + CRLF
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > MAX_LINE:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return CRLF.join(out) + CRLF


def _word_bytes(offset: int) -> int:
    """UTF-8 bytes an encoded-word may carry on a line starting at ``offset`` (76-char lines)."""
    return max(3, (76 - offset - len("=?utf-8?b??=")) // 4 * 3)


def _encoded_words(text: str, first_offset: int) -> str:
    """``=?utf-8?b?...?=`` words of at most 75 characters, never splitting a character (RFC 2047)."""
    words, chunk, size = [], [], 0
    budget = _word_bytes(first_offset)
    for ch in text:
        n = len(ch.encode("utf-8"))
        if chunk and size + n > budget:
            words.append("".join(chunk))
            chunk, size, budget = [], 0, _word_bytes(1)  # continuation lines start with a space
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    encoded = [
        "=?utf-8?b?" + b2a_base64(w.encode("utf-8"), newline=False).decode("ascii") + "?=" for w in words
    ]
    return f"{CRLF} ".join(encoded)
