"""A fake FCM HTTP v1 API and Google OAuth token endpoint.

- POST /token: the service-account JWT bearer grant (what google-auth sends to ``token_uri``);
  answers ``{"access_token", "expires_in", "token_type"}``.
- POST /v1/projects/{project}/messages:send: ``{"name": "projects/p/messages/0:..."}``, or the
  Google error shape ``{"error": {"code", "message", "status", "details": [{"@type":
  "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": ...}]}}``: a token
  containing "unregistered" -> 404 UNREGISTERED; containing "badtoken" -> 400 INVALID_ARGUMENT
  on ``message.token``; injected 429 -> QUOTA_EXCEEDED, 503 -> UNAVAILABLE, 500 -> INTERNAL.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.server import FakeServer, Fault

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
FCM_CODE = {
    400: "INVALID_ARGUMENT",
    401: "THIRD_PARTY_AUTH_ERROR",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _error(
    status: int, message: str, error_code: str | None = None, extra=None, headers=None
) -> web.Response:
    details = [{"@type": FCM_ERROR, "errorCode": error_code or FCM_CODE.get(status, "UNSPECIFIED_ERROR")}]
    details += extra or []
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": STATUS.get(status, "UNKNOWN"),
            "details": details,
        }
    }
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FcmFake(FakeServer):
    project: str = "relance-test"
    tokens_issued: list[str] = field(default_factory=list)
    assertions: list[str] = field(default_factory=list)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/token", self.token),
            web.post("/v1/projects/{project}/messages:send", self.send),
        ]

    def fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        return _error(status, "injected error", headers=headers)

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        assertion = form.get("assertion", "")
        if form.get("grant_type") != JWT_GRANT or assertion.count(".") != 2:
            body = {"error": "invalid_grant", "error_description": "bad assertion"}
            return web.json_response(body, status=400)
        self.assertions.append(assertion)
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens_issued.append(token)
        return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def send(self, request: web.Request) -> web.Response:
        rec, fault = await self._before(request)
        if fault is not None:
            return fault
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens_issued:
            return _error(401, "Request had invalid authentication credentials.")
        if request.match_info["project"] != self.project:
            return _error(404, "Requested entity was not found.", "SENDER_ID_MISMATCH")
        body = rec.body if isinstance(rec.body, dict) else json.loads(rec.body or "{}")
        token = (body.get("message") or {}).get("token", "")
        if "unregistered" in token:
            return _error(404, "Requested entity was not found.", "UNREGISTERED")
        if not token or "badtoken" in token:
            violation = {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
            }
            return _error(
                400,
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
                [violation],
            )
        name = f"projects/{self.project}/messages/0:{secrets.token_hex(8)}%{secrets.token_hex(8)}"
        return web.json_response({"name": name})
