"""A fake SendGrid v3 API: POST /v3/mail/send as the real one answers it.

202 Accepted with an empty body and ``X-Message-Id`` (200 in sandbox mode, which validates and
does not deliver); 400 with ``{"errors": [{"message", "field", "help"}]}`` for an invalid
recipient (any address containing "bounce", or listed in ``invalid``); 401 without the right
bearer key; 429 with ``X-RateLimit-*`` headers (and Retry-After when injected); 5xx as injected.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.server import FakeServer, Fault

API_KEY = "SG.fake-key-for-tests"


def _errors(status: int, message: str, field_name: str | None = None, headers=None) -> web.Response:
    body = {"errors": [{"message": message, "field": field_name, "help": None}]}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class SendGridFake(FakeServer):
    api_key: str = API_KEY
    invalid: set[str] = field(default_factory=set)
    message_ids: dict[str, dict] = field(default_factory=dict)  # X-Message-Id -> payload

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v3/mail/send", self.mail_send)]

    def fault_response(self, fault: Fault) -> web.Response:
        if fault.status == 429:
            headers = {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + int(fault.retry_after or 1)),
            }
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return _errors(429, "too many requests", headers=headers)
        return _errors(fault.status or 500, "internal error")

    async def mail_send(self, request: web.Request) -> web.Response:
        rec, fault = await self._before(request)
        if fault is not None:
            return fault
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _errors(401, "The provided authorization grant is invalid, expired, or revoked")
        body = rec.body if isinstance(rec.body, dict) else {}
        for key in ("personalizations", "from", "subject", "content"):
            if not body.get(key):
                return _errors(400, f"The {key} parameter is required.", key)
        for i, p in enumerate(body["personalizations"]):
            for j, to in enumerate(p.get("to") or []):
                address = to.get("email", "")
                if "@" not in address or "bounce" in address or address in self.invalid:
                    where = f"personalizations.{i}.to.{j}.email"
                    return _errors(400, "Does not contain a valid address.", where)
        if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return web.Response(status=200)
        message_id = secrets.token_urlsafe(16)[:22]
        self.message_ids[message_id] = body
        return web.Response(status=202, headers={"X-Message-Id": message_id})
