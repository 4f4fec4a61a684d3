"""Push through Firebase Cloud Messaging HTTP v1 (``push_provider = "fcm"``).

Why not firebase-admin: it has no endpoint override (its FCM URL is fixed), so neither a test
server nor a proxy can stand in for Google. We call the documented HTTP v1 endpoint
``POST {settings.fcm_base_url}/v1/projects/{project}/messages:send`` with aiohttp
(channels.http_json), and get the OAuth access token with google-auth from the service-account file
(``settings.fcm_credentials_file``; the token endpoint is the file's ``token_uri``). The token
is fetched once and refreshed before expiry under a lock, in a thread (google-auth's transport
is synchronous).

Errors (``error.details[].errorCode`` of the FcmError detail): UNREGISTERED, SENDER_ID_MISMATCH
and INVALID_ARGUMENT on ``message.token`` are permanent with effect ``device_inactive``; other
INVALID_ARGUMENT permanent; QUOTA_EXCEEDED (429), UNAVAILABLE (503), INTERNAL (500) retryable
honouring Retry-After; 401 (expired token) refreshes the token and retries once more;
THIRD_PARTY_AUTH_ERROR permanent; a timeout after sending = ``unknown``.
"""

from __future__ import annotations

import asyncio
import threading

from channels import http_json
from channels.base import EFFECT_DEVICE, Outbound, SendError
from channels.ratelimit import bucket_for
from channels.retry import RetryPolicy, parse_retry_after

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
TOKEN_GONE = {"UNREGISTERED", "SENDER_ID_MISMATCH"}


class FcmProvider(http_json.LoopProvider):
    name = "fcm"
    channel = "push"

    def __init__(self, settings) -> None:
        from google.oauth2 import service_account

        from channels.registry import ProviderConfigError

        path = settings.fcm_credentials_file
        if not path or not path.exists():
            raise ProviderConfigError(
                "RELANCE_PUSH_PROVIDER=fcm needs RELANCE_FCM_CREDENTIALS_FILE: the path of a Firebase "
                f"service-account JSON key file (got {str(path) if path else 'nothing'})"
            )
        try:
            self._credentials = service_account.Credentials.from_service_account_file(
                str(path), scopes=[SCOPE]
            )
        except (ValueError, KeyError) as exc:
            raise ProviderConfigError(f"{path}: not a service-account key file ({exc})") from exc
        self.project = settings.fcm_project_id or self._credentials.project_id
        if not self.project:
            raise ProviderConfigError(f"RELANCE_FCM_PROJECT_ID is not set and {path} has no project_id")
        self.url = f"{settings.fcm_base_url.rstrip('/')}/v1/projects/{self.project}/messages:send"
        self.settings = settings
        self.concurrency = settings.fcm_concurrency
        self.policy = RetryPolicy.from_settings(settings)
        self.bucket = bucket_for(self.name, settings)
        self.io = http_json.IoLoop(self.name, self.concurrency, settings.provider_timeout)
        self._token_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FcmProvider(project={self.project!r})"

    # ---- OAuth token -----------------------------------------------------------
    def _token_sync(self, force: bool = False) -> str:
        import google.auth.transport.requests

        with self._token_lock:
            if force or not self._credentials.valid:  # valid = has a token not about to expire
                self._credentials.refresh(google.auth.transport.requests.Request())
            return self._credentials.token

    async def _token(self, force: bool = False) -> str:
        if not force and self._credentials.valid:
            return self._credentials.token
        try:
            return await asyncio.to_thread(self._token_sync, force)
        except Exception as exc:  # noqa: BLE001 - google.auth.exceptions.* and transport errors
            raise SendError(
                f"fcm: cannot get an access token ({type(exc).__name__})", retryable=True
            ) from exc

    # ---- sending -----------------------------------------------------------------
    def payload(self, m: Outbound) -> dict:
        r = m.rendered
        data = {str(k): str(v) for k, v in (r.data or {}).items()}
        data.update(ledger_id=str(m.ledger_id), run_id=str(m.run_id), campaign=m.campaign)
        if r.deep_link:
            data["link"] = r.deep_link
        label = "".join(c if c.isalnum() or c in "-_.~%" else "_" for c in m.campaign)[:50] or "relance"
        return {
            "message": {
                "token": m.to,
                "notification": {"title": r.title, "body": r.body},
                "data": data,
                "fcm_options": {"analytics_label": label},
            }
        }

    async def _send_one(self, http, m: Outbound) -> str | None:
        token = await self._token()
        auth = {"Authorization": f"Bearer {token}"}
        answer = await http_json.post_json(http, self.url, self.payload(m), self.name, auth)
        if answer.status == 401:
            await self._token(force=True)  # expired or revoked token: the next attempt uses a fresh one
        return self.classify(answer)

    @staticmethod
    def classify(answer: http_json.Answer) -> str | None:
        status = answer.status
        if status == 200:
            return answer.json().get("name")
        try:
            error = (answer.json() or {}).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        details = error.get("details") or []
        code = next((d.get("errorCode") for d in details if d.get("@type") == FCM_ERROR), None) or error.get(
            "status", str(status)
        )
        on_token = any(
            v.get("field") == "message.token"
            for d in details
            if d.get("@type") == BAD_REQUEST
            for v in d.get("fieldViolations") or []
        )
        text = f"fcm {status} {code}: {str(error.get('message') or 'HTTP error')[:200]}"
        if status == 401:
            raise SendError(text, retryable=True, code=code)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(answer.headers.get("Retry-After"))
            raise SendError(text, retryable=True, retry_after=retry_after, code=code)
        if code in TOKEN_GONE or (code == "INVALID_ARGUMENT" and on_token):
            raise SendError(text, effect=EFFECT_DEVICE, code=code)
        raise SendError(text, code=code)
