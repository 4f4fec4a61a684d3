"""E-mail through SendGrid's v3 Mail Send API (``settings.email_provider = "sendgrid"``).

The official ``sendgrid`` client builds the request: its ``Mail`` helper classes build the v3
payload, and ``SendGridAPIClient(api_key, host=settings.sendgrid_host)`` gives the URL
(``client.mail.send``) and its headers (bearer key, User-Agent). The request itself goes
through one pooled aiohttp session per batch (channels.http_json) instead of the client's ``post()``: that one
is urllib, synchronous, and opens a new connection per request, which capped a 128-thread pool
at 454 messages/s with 100 ms of latency; asyncio with keep-alive connections holds hundreds
of requests in flight without threads (see notes/readme-channels.md for the figures).

Errors: 2xx sent (id from ``X-Message-Id``); 400 on the recipient address = permanent with
effect ``invalid``; other 4xx permanent; 429 and 5xx retryable honouring ``Retry-After`` (or
``X-RateLimit-Reset``); connection errors retryable; a timeout after the request left =
``unknown``.
"""

from __future__ import annotations

import time

from channels import http_json
from channels.base import EFFECT_INVALID, Outbound, SendError
from channels.ratelimit import bucket_for
from channels.retry import RetryPolicy, parse_retry_after


class SendGridProvider(http_json.LoopProvider):
    name = "sendgrid"
    channel = "email"

    def __init__(self, settings) -> None:
        from sendgrid import SendGridAPIClient

        from channels.registry import ProviderConfigError

        if settings.sendgrid_api_key is None:
            raise ProviderConfigError(
                "RELANCE_EMAIL_PROVIDER=sendgrid needs RELANCE_SENDGRID_API_KEY (an API key with Mail Send "
                "permission) in the environment"
            )
        client = SendGridAPIClient(
            api_key=settings.sendgrid_api_key.get_secret_value(), host=settings.sendgrid_host
        )
        self._url = client.client.mail.send._build_url(None)
        self._headers = {**client.client.request_headers, "Content-Type": "application/json"}
        self.settings = settings
        self.sandbox = settings.sendgrid_sandbox
        self.concurrency = settings.sendgrid_concurrency
        self.policy = RetryPolicy.from_settings(settings)
        self.bucket = bucket_for(self.name, settings)
        self.io = http_json.IoLoop(self.name, self.concurrency, settings.provider_timeout, self._headers)

    def __repr__(self) -> str:  # never show the key
        return f"SendGridProvider(url={self._url!r}, sandbox={self.sandbox})"

    # ---- payload -------------------------------------------------------------
    def payload(self, m: Outbound) -> dict:
        """The v3 mail/send body, built with the official helper classes."""
        from sendgrid.helpers.mail import (
            Category,
            CustomArg,
            From,
            Header,
            HtmlContent,
            Mail,
            MailSettings,
            PlainTextContent,
            SandBoxMode,
            To,
        )

        r = m.rendered
        mail = Mail(
            from_email=From(self.settings.sender_email, self.settings.sender_name),
            to_emails=To(m.to),
            subject=r.subject,
            plain_text_content=PlainTextContent(r.text),
            html_content=HtmlContent(r.html),
        )
        for key, value in r.headers.items():
            mail.add_header(Header(key, value))
        mail.add_category(Category(m.campaign[:255]))
        for key, value in (("ledger_id", m.ledger_id), ("run_id", m.run_id), ("campaign", m.campaign)):
            mail.add_custom_arg(CustomArg(key, str(value)))
        if self.sandbox:
            mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
        return mail.get()

    # ---- sending ---------------------------------------------------------------
    async def _send_one(self, http, m: Outbound) -> str | None:
        return self.classify(await http_json.post_json(http, self._url, self.payload(m), self.name))

    @staticmethod
    def classify(answer: http_json.Answer) -> str | None:
        """The provider message id of a success, or raise a classified SendError."""
        status = answer.status
        if status in (200, 202):
            return answer.headers.get("X-Message-Id")
        detail = _error_text(answer)
        if status == 429 or status >= 500:
            raise SendError(f"sendgrid {status}: {detail}", retryable=True, retry_after=_retry_after(answer))
        if status == 400 and ("valid address" in detail or ".email" in detail):
            raise SendError(
                f"sendgrid 400: invalid recipient address ({detail})", effect=EFFECT_INVALID, code=400
            )
        raise SendError(f"sendgrid {status}: {detail}", code=status)


def _error_text(answer: http_json.Answer) -> str:
    """SendGrid's ``errors[].message (field)``; never the request body (it holds the address)."""
    try:
        errors = (answer.json() or {}).get("errors") or []
    except (ValueError, AttributeError):
        return f"HTTP {answer.status}"
    parts = [
        f"{e.get('message')} ({e['field']})" if e.get("field") else str(e.get("message")) for e in errors
    ]
    return "; ".join(parts)[:300] or f"HTTP {answer.status}"


def _retry_after(response: http_json.Answer) -> float | None:
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    if seconds is None and response.headers.get("X-RateLimit-Reset", "").isdigit():
        seconds = max(0.0, int(response.headers["X-RateLimit-Reset"]) - time.time())
    return seconds
