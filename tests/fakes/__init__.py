"""Fake provider servers (real HTTP on 127.0.0.1) and the pytest fixtures that start them.

tests/conftest.py imports the fixtures below, so any test can ask for ``sendgrid_fake``,
``twilio_fake`` or ``fcm_fake`` (a running server), or for ``sendgrid_env``, ``twilio_env``,
``fcm_env`` (the server plus RELANCE_* settings pointing the provider at it, with fast
retries). Run a fake by hand: ``python -m tests.fakes sendgrid --latency 0.1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fcm_fake import FcmFake
from tests.fakes.sendgrid_fake import API_KEY, SendGridFake
from tests.fakes.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, TwilioFake

FAST_RETRIES = {
    "RELANCE_PROVIDER_MAX_ATTEMPTS": "3",
    "RELANCE_PROVIDER_BACKOFF_BASE": "0.02",
    "RELANCE_PROVIDER_BACKOFF_MAX": "5",
    "RELANCE_PROVIDER_TIMEOUT": "1.0",
}


def service_account_json(path: Path, token_uri: str, project: str = "relance-test") -> Path:
    """A throwaway service-account key file (fresh RSA key) whose token_uri is the fake."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "fake-key-id",
        "private_key": pem,
        "client_email": f"relance@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


def _apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from core.settings import get_settings

    for key, value in {**FAST_RETRIES, **env}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


@pytest.fixture
def sendgrid_fake() -> Iterator[SendGridFake]:
    with SendGridFake() as fake:
        yield fake


@pytest.fixture
def twilio_fake() -> Iterator[TwilioFake]:
    with TwilioFake() as fake:
        yield fake


@pytest.fixture
def fcm_fake() -> Iterator[FcmFake]:
    with FcmFake() as fake:
        yield fake


@pytest.fixture
def sendgrid_env(settings, sendgrid_fake, monkeypatch):
    """Settings with RELANCE_EMAIL_PROVIDER=sendgrid pointed at the fake; yields the fake."""
    env = {"RELANCE_EMAIL_PROVIDER": "sendgrid", "RELANCE_SENDGRID_API_KEY": API_KEY,
           "RELANCE_SENDGRID_HOST": sendgrid_fake.url}  # fmt: skip
    _apply_env(monkeypatch, env)
    return sendgrid_fake


@pytest.fixture
def twilio_env(settings, twilio_fake, monkeypatch):
    """Settings with RELANCE_SMS_PROVIDER=twilio pointed at the fake; yields the fake."""
    env = {"RELANCE_SMS_PROVIDER": "twilio", "RELANCE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
           "RELANCE_TWILIO_AUTH_TOKEN": AUTH_TOKEN, "RELANCE_TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32,
           "RELANCE_TWILIO_BASE_URL": twilio_fake.url}  # fmt: skip
    _apply_env(monkeypatch, env)
    return twilio_fake


@pytest.fixture
def fcm_env(settings, fcm_fake, monkeypatch, tmp_path):
    """Settings with RELANCE_PUSH_PROVIDER=fcm, a generated service account, the fake as base URL."""
    creds = service_account_json(
        tmp_path / "fcm-service-account.json", f"{fcm_fake.url}/token", fcm_fake.project
    )
    env = {"RELANCE_PUSH_PROVIDER": "fcm", "RELANCE_FCM_CREDENTIALS_FILE": str(creds),
           "RELANCE_FCM_PROJECT_ID": fcm_fake.project, "RELANCE_FCM_BASE_URL": fcm_fake.url}  # fmt: skip
    _apply_env(monkeypatch, env)
    return fcm_fake
