"""A campaign and its message written into tmp_path, for the run, crash and worker tests."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONTENT = """\
channels: [email, sms, push]
link: "https://shop.example/r/{{ offer.code }}"
fr:
  headline: "{{ greeting }}"
  body: "Votre rayon préféré : {{ features.favourite_category }}. Code {{ offer.code }}."
  cta: "Voir"
  recommendations_title: "Pour vous"
  footer_reason: "Vous êtes client."
  unsubscribe: "Se désabonner"
  email:
    subject: "Bonjour {{ first_name }}"
    preheader: "Code {{ offer.code }}"
  sms: "Code {{ offer.code }} : {{ link }}"
  push:
    title: "Bonjour {{ first_name }}"
    body: "Code {{ offer.code }}"
"""


def write_campaign(
    tmp_path: Path, name: str = "relaunch", control: float = 10, channels: str = "email"
) -> Path:
    """campaigns/<name>.yaml and templates/t/hello in tmp_path; point RELANCE_TEMPLATES_DIR there."""
    templates = tmp_path / "templates"
    if not templates.exists():
        shutil.copytree(REPO / "templates" / "_layout", templates / "_layout")
        (templates / "t" / "hello").mkdir(parents=True)
        (templates / "t" / "hello" / "content.yaml").write_text(CONTENT, encoding="utf-8")
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir(exist_ok=True)
    path = campaigns / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "message: t/hello\n"
        f"control_group:\n  percent: {control}\n"
        f"channels:\n  strategy: first_available\n  order: [{channels}]\n"
        "offer:\n  code: MERCI10\n",
        encoding="utf-8",
    )
    return path


def env_for(tmp_path: Path, db_url: str, batch_size: int = 10) -> dict[str, str]:
    """Environment of a `relance` subprocess working in tmp_path."""
    import os

    return {
        **os.environ,
        "RELANCE_DATABASE_URL": db_url,
        "RELANCE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "RELANCE_TEMPLATES_DIR": str(tmp_path / "templates"),
        "RELANCE_CAMPAIGNS_DIR": str(tmp_path / "campaigns"),
        "RELANCE_BATCH_SIZE": str(batch_size),
        "RELANCE_SECRET_KEY": "test-secret",
    }


def seed_features(engine, customer_ids: list[int], category: str = "épicerie") -> None:
    """customer_features rows (the test template reads features.favourite_category)."""
    from sqlalchemy import insert

    from core.models import CustomerFeatures, utcnow

    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(CustomerFeatures.__table__),
            [{"customer_id": i, "favourite_category": category, "frequency": 2, "monetary_cents": 4200,
              "avg_basket_cents": 2100, "tenure_days": 100, "computed_at": now} for i in customer_ids],
        )  # fmt: skip


def outbox_ledger_ids(outbox: Path) -> list[tuple[int, int]]:
    """(ledger_id, customer_id) of every message the outbox provider wrote, repeats included."""
    import json

    found = []
    for path in sorted(outbox.glob("*.jsonl")) if outbox.exists() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                msg = json.loads(line)
                found.append((msg["ledger_id"], msg["customer_id"]))
    return found


def use_tmp_dirs(monkeypatch, tmp_path: Path, **env: str) -> None:
    """Templates and campaigns from tmp_path (plus RELANCE_<NAME> overrides), settings reloaded."""
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(tmp_path / "campaigns"))
    for name, value in env.items():
        monkeypatch.setenv(f"RELANCE_{name.upper()}", value)
    get_settings.cache_clear()
