"""SMS through Twilio's Messages API with the official ``twilio`` client (``sms_provider = "twilio"``).

The client is ``twilio.rest.Client`` with its asynchronous path (``messages.create_async``), so a
batch needs no threads. Two ways exist to point it elsewhere (both checked in twilio 9.13's
source): ``client.api.base_url`` (the Api domain is built once and keeps the attribute) and
``http_client=``. We use both: ``settings.twilio_base_url`` sets the base URL (tests point it at
the fake), and our own small ``AsyncHttpClient`` subclass of twilio's async client gives a pooled
aiohttp session with a real timeout (twilio passes ``timeout=None`` through to aiohttp, which
would mean no timeout), keeps the response headers of each request (``Retry-After``; twilio's
exception drops them) and does not log request bodies (twilio logs them: phone numbers).

Errors: 21211 (invalid 'To') and 21614 (not a mobile) permanent with effect ``invalid``; 21610
(the customer replied STOP) permanent with effect ``stop``; other 4xx permanent; 429 and 5xx
retryable honouring Retry-After; connection refused retryable; a timeout or a dropped
connection after sending = ``unknown``.
"""

from __future__ import annotations

import contextvars

import aiohttp

from channels.base import EFFECT_INVALID, EFFECT_STOP, OnResult, Outbound, SendError, SendResult
from channels.ratelimit import bucket_for
from channels.retry import RetryPolicy, parse_retry_after

EFFECT_BY_CODE = {21211: EFFECT_INVALID, 21614: EFFECT_INVALID, 21610: EFFECT_STOP}
DESCRIPTION = {
    21211: "invalid 'To' phone number",
    21614: "'To' number is not a mobile number",
    21610: "the recipient replied STOP (unsubscribed)",
    21408: "no permission to send to this region",
    21612: "cannot route to this number",
    20003: "authentication failed: check RELANCE_TWILIO_ACCOUNT_SID and RELANCE_TWILIO_AUTH_TOKEN",
    20429: "too many requests",
    21606: "the 'From' number cannot send SMS",
}

_headers: contextvars.ContextVar[dict | None] = contextvars.ContextVar("twilio_headers", default=None)


def _http_client_class():
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.http.response import Response

    class AsyncHttpClient(AsyncTwilioHttpClient):
        """twilio's async client with a bounded, timed aiohttp session of our own."""

        def __init__(self, timeout: float, connections: int) -> None:
            super().__init__(pool_connections=False)
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(5.0, timeout)),
                connector=aiohttp.TCPConnector(limit=connections),
            )

        async def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                          allow_redirects=False) -> Response:  # fmt: skip
            basic = aiohttp.BasicAuth(auth[0], auth[1]) if auth else None
            async with self.session.request(
                method.upper(), url, params=params, data=data, headers=headers, auth=basic,
                allow_redirects=allow_redirects,
            ) as response:  # fmt: skip
                text = await response.text()
            _headers.set(dict(response.headers))
            return Response(response.status, text, response.headers)

    return AsyncHttpClient


class TwilioProvider:
    name = "twilio"
    channel = "sms"

    def __init__(self, settings) -> None:
        from channels.registry import ProviderConfigError

        missing = [
            env
            for env, value in (
                ("RELANCE_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("RELANCE_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
            )
            if not value
        ]
        if not (settings.twilio_messaging_service_sid or settings.twilio_from):
            missing.append("RELANCE_TWILIO_MESSAGING_SERVICE_SID (or RELANCE_TWILIO_FROM)")
        if missing:
            raise ProviderConfigError(
                f"RELANCE_SMS_PROVIDER=twilio needs {', '.join(missing)} in the environment"
            )
        self.settings = settings
        self.status_callback = settings.public_base_url.rstrip("/") + "/webhooks/twilio/status"
        self.concurrency = settings.twilio_concurrency
        self.policy = RetryPolicy.from_settings(settings)
        self.bucket = bucket_for(self.name, settings)
        self._client = None  # (twilio Client, its aiohttp client): made at the first call, closed by aclose
        self._slots = None

    def __repr__(self) -> str:
        return f"TwilioProvider(account={self.settings.twilio_account_sid!r})"

    def _make_client(self):
        from twilio.rest import Client

        s = self.settings
        http = _http_client_class()(s.provider_timeout, self.concurrency)
        client = Client(s.twilio_account_sid, s.twilio_auth_token.get_secret_value(), http_client=http)
        if s.twilio_base_url:
            client.api.base_url = s.twilio_base_url.rstrip("/")
        return client, http

    @property
    def in_flight(self) -> int:
        return max(1, self.concurrency)

    async def send_batch(
        self, messages: list[Outbound], on_result: OnResult | None = None
    ) -> list[SendResult]:
        """A client (and its aiohttp session) per provider, i.e. per batch and event loop: the flow
        hands a batch over in chunks, which share its connections and its ``concurrency`` slots."""
        import asyncio

        from channels.http_json import run_reporting

        if not messages:
            return []
        if self._client is None:
            self._client = self._make_client()
            self._slots = asyncio.Semaphore(self.in_flight)
        client, _ = self._client
        send = lambda m: self._send_one(client, m)  # noqa: E731
        return await run_reporting(messages, send, self.policy, self.bucket, self._slots, on_result)

    async def _send_one(self, client, m: Outbound) -> str:
        from twilio.base.exceptions import TwilioRestException

        s = self.settings
        sender = (
            {"messaging_service_sid": s.twilio_messaging_service_sid}
            if s.twilio_messaging_service_sid
            else {"from_": s.twilio_from}
        )
        _headers.set(None)
        try:
            message = await client.messages.create_async(
                to=m.to,
                body=m.rendered.text,
                # the ledger id rides in the signed callback URL: Twilio's first callbacks often arrive
                # before this batch has stored the SID it is about to return
                status_callback=f"{self.status_callback}?ledger_id={m.ledger_id}",
                **sender,
            )
        except TwilioRestException as exc:
            raise self.classify(exc, _headers.get()) from exc
        except aiohttp.ClientConnectorError as exc:
            raise SendError(f"twilio unreachable ({type(exc).__name__})", retryable=True) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SendError(
                f"twilio: no answer ({type(exc).__name__}), outcome unknown", unknown=True
            ) from exc
        return message.sid

    @staticmethod
    def classify(exc, headers: dict | None) -> SendError:
        """Twilio's status and error code -> our classes (the message is ours: Twilio's names the number)."""
        code = exc.code if isinstance(exc.code, int) else None
        text = f"twilio {exc.status}" + (f" error {code}" if code else "")
        text += (
            f": {DESCRIPTION.get(code, 'see https://www.twilio.com/docs/errors/' + str(code or exc.status))}"
        )
        if exc.status == 429 or exc.status >= 500:
            retry_after = parse_retry_after((headers or {}).get("Retry-After"))
            return SendError(text, retryable=True, retry_after=retry_after, code=code)
        return SendError(text, effect=EFFECT_BY_CODE.get(code), code=code)

    async def aclose(self) -> None:
        held, self._client = self._client, None
        if held is not None:
            await held[1].close()
