"""Project settings, read from the environment (prefix RELANCE_) or a .env file.

Secrets (API keys, auth tokens, the signing key) live here and nowhere else:
never in campaign YAML, never in logs.
"""

from __future__ import annotations

from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "relance-dev-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELANCE_", env_file=".env", extra="ignore")

    # --- where things are -------------------------------------------------
    database_url: str = "sqlite:///relance.db"
    home: Path = Path(".")
    campaigns_dir: Path = Path("campaigns")
    templates_dir: Path = Path("templates")
    segments_file: Path = Path("audiences/segments.yaml")
    outbox_dir: Path = Path("outbox")
    reports_dir: Path = Path("reports")
    models_dir: Path = Path("models")

    # --- identity and links -----------------------------------------------
    public_base_url: str = "http://127.0.0.1:8800"
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    sender_name: str = "Maison Relance"
    sender_email: str = "bonjour@relance.example"
    sender_postal_address: str = "12 rue de la Paix, 75002 Paris, France"
    unsubscribe_mailto: str = "desabonnement@relance.example"

    # --- targeting policy ---------------------------------------------------
    global_control_percent: float = Field(0.0, ge=0, le=50)
    default_locale: str = "fr_FR"
    default_timezone: str = "Europe/Paris"

    # --- selection policy (issue 3: audiences.policy, audiences.selection) ---
    # Frequency caps applied to every campaign, on top of a campaign's own
    # `frequency_caps:` (messages sent in the last `days`; `channel` absent = all).
    default_frequency_caps: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"max_messages": 3, "days": 7},
            {"max_messages": 1, "days": 7, "channel": "sms"},
        ]
    )
    # French commercial SMS rule (Code des postes et communications electroniques / CNIL):
    # Monday-Saturday 08:00-20:00 in the customer's time zone, never Sundays or public holidays.
    sms_hours_policy: bool = True
    sms_hours_start: time = time(8, 0)
    sms_hours_end: time = time(20, 0)
    sms_days: list[str] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat"])
    sms_skip_public_holidays: bool = True
    # Quiet hours (customer's local time) for the listed channels when a campaign has no sending_window.
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(8, 0)
    quiet_hours_channels: list[str] = Field(default_factory=lambda: ["push"])

    # --- SMS ----------------------------------------------------------------
    sms_stop_mention: str = "STOP au 36111"
    sms_price_per_segment: float = 0.045
    sms_max_segments: int = 3

    # --- channel providers (outbox | smtp | sendgrid | twilio | fcm) --------
    email_provider: str = "outbox"
    sms_provider: str = "outbox"
    push_provider: str = "outbox"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False

    sendgrid_api_key: SecretStr | None = None
    sendgrid_host: str = "https://api.sendgrid.com"
    sendgrid_sandbox: bool = False
    sendgrid_webhook_public_key: str | None = None

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_from: str | None = None
    twilio_base_url: str | None = None

    fcm_project_id: str | None = None
    fcm_credentials_file: Path | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"

    # delivery (issue 5, channels/): retries, rate limits, circuit breaker, connections
    # `<provider>_rate_per_second` (0 = unlimited) and `<provider>_concurrency` (requests in flight).
    smtp_rate_per_second: float = 50.0
    smtp_concurrency: int = 4  # SMTP connections per batch, each reused for its share of the batch
    smtp_timeout: float = 30.0
    sendgrid_rate_per_second: float = 1000.0
    sendgrid_concurrency: int = 256
    twilio_rate_per_second: float = 100.0
    twilio_concurrency: int = 64
    fcm_rate_per_second: float = 1000.0
    fcm_concurrency: int = 256
    provider_timeout: float = 15.0  # seconds per HTTP request; a read timeout means outcome unknown
    provider_max_attempts: int = Field(4, ge=1, le=20)  # per message, on retryable errors
    provider_backoff_base: float = 0.5  # seconds; exponential with full jitter
    provider_backoff_max: float = 30.0  # also caps a provider's Retry-After
    circuit_window: int = 50  # last attempts looked at
    circuit_min_attempts: int = 20  # no judgement on fewer
    circuit_failure_rate: float = 0.5  # open above this share of failures
    circuit_open_seconds: float = 60.0  # then one half-open probe batch

    # --- sending ------------------------------------------------------------
    batch_size: int = 1000
    # delivery (issue 5): batch tasks run at once per flow run, claim takeover, deployments
    send_workers: int = Field(1, ge=1, le=32)  # batch tasks at once per flow run (>1: slow providers only)
    claim_timeout_seconds: float = 600.0  # a claim from another host older than this is taken over
    work_pool: str = "relance"  # Prefect work pool of `prefect deploy --all`

    # --- reports and alerts (issue 8) ----------------------------------------
    email_price_per_message: float = 0.0008  # provider price, for cost per conversion
    push_price_per_message: float = 0.0
    alert_hard_bounce_rate: float = 0.05  # of sent
    alert_complaint_rate: float = 0.001  # of delivered
    alert_unsubscribe_rate: float = 0.01  # of delivered
    alert_min_volume: int = 200  # rates are judged only past this many sent messages
    alert_check_seconds: float = 10.0  # each sending worker re-reads the run's rates at most this often
    reports_cron: str = "0 7 * * *"  # `refresh-reports` deployment: every morning before marketers look
    train_cron: str = "0 5 * * 1"  # `train-models` deployment: weekly, before Monday's campaigns
    journeys_cron: str = "* * * * *"  # `advance-journeys` deployment: each journey's due steps, every minute
    journeys_tick_seconds: float = 10.0  # with a triggered journey, a run ticks again this often...
    journeys_tick_period_seconds: float = 60.0  # ...until the next run of the cron above
    upkeep_timezone: str = "Europe/Paris"  # of the crons above
    alerts_pause_runs: bool = True  # False (`relance run --ignore-alerts`): resume a run paused by alert

    # --- targeting models (issue 7: audiences.learning) ---------------------
    learning_window_days: int = 7  # a response counts within this many days of the message
    learning_min_rows: int = 1000  # fewer training rows: refuse with a message, no silent bad model
    learning_min_positives: int = 50  # ...or fewer positives (responders, churners, per uplift arm)
    learning_min_auc: float = 0.55  # a version passes (is used) at or above this holdout AUC
    learning_min_qini: float = 0.0  # an uplift version passes above this holdout Qini coefficient
    learning_max_rows: int = 400_000  # training rows kept (random sample beyond), for time and memory
    churn_horizon_days: int = 90  # churned = no order within this many days after the cut-off
    churn_snapshots: int = 4  # cut-off dates (the newest is the time-based holdout)
    churn_snapshot_step_days: int = 30
    score_batch_size: int = 50_000  # customers per predict when scoring
    # OpenMP threads for training and scoring (0 = every core). 1 by default: on a shared, loaded machine
    # OpenMP's spin-waiting made a small training 15x slower with 2 threads than with 1 (notes/7-learning.md).
    learning_threads: int = 1
    recommendations_per_customer: int = 5

    # --- tracking -----------------------------------------------------------
    conversions_api_key: SecretStr | None = None
    # Largest request body the tracking server reads (bytes); past it: 413, before reading the rest.
    # SendGrid's event batches stay under about 768 KB; Twilio's and our forms are a few KB (issue 16).
    tracking_max_body_bytes: int = Field(1_048_576, ge=1024)

    # --- customer events (issue 18: audiences.event_types, audiences.customer_events) ---
    events_file: Path = Path("audiences/events.yaml")  # declared event types (beside segments.yaml)
    lapsing_days: list[int] = Field(default_factory=lambda: [60, 90])  # `lapsing` after N days without order


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
