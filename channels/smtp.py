"""E-mail over SMTP (``email_provider = "smtp"``): a relay, Postfix, or a provider's SMTP endpoint.

Why aiosmtplib rather than smtplib in threads: the rest of a batch is asyncio already, an SMTP
session is a sequence of awaits, and a few sessions in one event loop cost no threads. A provider
(one per batch) opens at most ``settings.smtp_concurrency`` connections; each is reused for its
share of the messages of every call (the flow hands a batch over in chunks), reopened after an
error and closed by ``aclose``.

Errors: 5xx on RCPT 550/551/553 (no such mailbox) = permanent with effect ``invalid``; other
5xx permanent; 4xx (greylisting, try again later) and connection failures retryable; a
disconnect or timeout once the message is being transferred = ``unknown`` (the server may
have queued it). The provider message id is the Message-ID header, which bounces quote back.
"""

from __future__ import annotations

import asyncio
import contextlib
from email.utils import formataddr, make_msgid

import aiosmtplib

from channels.base import EFFECT_INVALID, OnResult, Outbound, SendError, SendResult
from channels.ratelimit import bucket_for
from channels.retry import RetryPolicy, send_with_retry

NO_SUCH_MAILBOX = {550, 551, 553}


class _Session:
    """One SMTP connection of a batch, opened on first use and after a failure."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.smtp: aiosmtplib.SMTP | None = None

    async def ensure(self) -> aiosmtplib.SMTP:
        if self.smtp is not None and self.smtp.is_connected:
            return self.smtp
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout,
            start_tls=s.smtp_starttls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SendError(f"smtp authentication failed ({exc.code}): check RELANCE_SMTP_USERNAME/PASSWORD",
                            code=exc.code) from exc  # fmt: skip
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(f"smtp server unreachable ({type(exc).__name__})", retryable=True) from exc
        self.smtp = smtp
        return smtp

    async def drop(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.close()
        self.smtp = None

    async def quit(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            with contextlib.suppress(Exception):
                await self.smtp.quit()
        await self.drop()


class SmtpProvider:
    name = "smtp"
    channel = "email"

    def __init__(self, settings) -> None:
        self.settings = settings
        self.sender = formataddr((settings.sender_name, settings.sender_email))
        self.policy = RetryPolicy.from_settings(settings)
        self.bucket = bucket_for(self.name, settings)
        self._idle: list[_Session] = []  # open sessions between calls of one batch

    def __repr__(self) -> str:
        return f"SmtpProvider(host={self.settings.smtp_host!r}, port={self.settings.smtp_port})"

    @property
    def in_flight(self) -> int:
        return max(1, self.settings.smtp_concurrency)

    async def send_batch(
        self, messages: list[Outbound], on_result: OnResult | None = None
    ) -> list[SendResult]:
        if not messages:
            return []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(messages)):
            queue.put_nowait(i)
        results: list[SendResult | None] = [None] * len(messages)

        async def worker() -> None:
            session = self._idle.pop() if self._idle else _Session(self.settings)
            try:
                while not queue.empty():
                    i = queue.get_nowait()
                    results[i] = result = await send_with_retry(
                        messages[i], lambda m: self._send_one(session, m), self.policy, self.bucket
                    )
                    if on_result is not None:
                        on_result(result)
            finally:
                self._idle.append(session)  # kept open for the next call of the batch

        await asyncio.gather(*(worker() for _ in range(min(self.in_flight, len(messages)))))
        return [r for r in results if r is not None]

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            await session.quit()

    def message_bytes(self, m: Outbound, message_id: str, eight_bit: bool = True) -> bytes:
        """The message as sent: RenderedEmail.to_bytes (tens of µs; email.message's ~2 ms per e-mail);
        quoted-printable for a server without 8BITMIME."""
        return m.rendered.to_bytes(
            self.sender,
            transfer_encoding="8bit" if eight_bit else "quoted-printable",
            to=m.rendered.to or m.to,
            extra_headers={"X-Relance-Ledger-Id": str(m.ledger_id)},
            message_id=message_id,
        )

    async def _send_one(self, session: _Session, m: Outbound) -> str:
        smtp = await session.ensure()
        message_id = make_msgid(domain=self.settings.sender_email.rsplit("@", 1)[-1])
        data = self.message_bytes(m, message_id, smtp.supports_extension("8bitmime"))
        try:
            await smtp.sendmail(self.settings.sender_email, [m.to], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = min((r.code for r in exc.recipients), default=550)
            await _reset(smtp)
            raise _by_code(
                code, "recipient refused", effect=EFFECT_INVALID if code in NO_SUCH_MAILBOX else None
            ) from exc
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
            await _reset(smtp)
            raise _by_code(exc.code, "sender refused" if isinstance(exc, aiosmtplib.SMTPSenderRefused)
                           else "message refused") from exc  # fmt: skip
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            await session.drop()
            raise SendError(
                f"smtp: connection lost ({type(exc).__name__}), outcome unknown", unknown=True
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(smtp)
            raise _by_code(exc.code, "refused") from exc
        return message_id


def _by_code(code: int, what: str, effect: str | None = None) -> SendError:
    if 400 <= code < 500:
        return SendError(f"smtp {code}: {what}, try again later", retryable=True, code=code)
    return SendError(f"smtp {code}: {what}", effect=effect, code=code)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """Leave the session ready for the next message after a refusal."""
    with contextlib.suppress(Exception):
        await smtp.rset()
