"""A fake Twilio Programmable Messaging API: POST /2010-04-01/Accounts/{sid}/Messages.json.

Answers like Twilio: 201 with the Message resource (``sid`` "SM..." + 32 hex, ``status``
"queued"...), or an error ``{"code", "message", "more_info", "status"}``. Permanent errors per
number follow Twilio's own magic test numbers (+15005550001 invalid 'To' 21211, +15005550004
blocked/STOP 21610, +15005550009 not a mobile 21614) plus the ``errors`` map a test sets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

from tests.fakes.server import FakeServer, Fault

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-auth-token"

MAGIC = {"+15005550001": 21211, "+15005550004": 21610, "+15005550009": 21614}
MESSAGES = {
    21211: "The 'To' number is not a valid phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    20003: "Authenticate",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number.",
}


def _error(status: int, code: int, headers=None) -> web.Response:
    body = {
        "code": code,
        "message": MESSAGES.get(code, "error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass
class TwilioFake(FakeServer):
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    errors: dict[str, int] = field(default_factory=dict)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/2010-04-01/Accounts/{sid}/Messages.json", self.create_message)]

    def fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        return _error(status, {429: 20429, 503: 20503}.get(status, 20500), headers)

    async def create_message(self, request: web.Request) -> web.Response:
        rec, fault = await self._before(request)
        if fault is not None:
            return fault
        import base64

        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("Authorization") != expected or request.match_info["sid"] != self.account_sid:
            return _error(401, 20003)
        form = rec.body if isinstance(rec.body, dict) else {}
        to = form.get("To")
        if not to:
            return _error(400, 21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21606)
        code = self.errors.get(to) or MAGIC.get(to)
        if code:
            return _error(400, code)
        sid = "SM" + secrets.token_hex(16)
        now = formatdate(usegmt=True)
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        body = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "subresource_uris": {"media": f"{base}/Messages/{sid}/Media.json"},
            "to": to,
            "uri": f"{base}/Messages/{sid}.json",
        }
        return web.json_response(body, status=201)
