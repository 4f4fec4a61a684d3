"""Customer events in (issue 18), on SQLite and PostgreSQL: idempotent batches, per-event verdicts,
unknown customers attached by the customer import, built-in events, retention, the CSV backfill."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from audiences import customer_events as ce
from audiences.event_types import EventTypes
from audiences.importer import import_customers, import_events, import_orders
from core.models import Customer, CustomerEvent
from core.spec_loader import SpecError

REPO = Path(__file__).resolve().parent.parent
TYPES = EventTypes.load(REPO / "audiences" / "events.yaml")
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _write(path: Path, text_: str) -> Path:
    path.write_text(text_, encoding="utf-8")
    return path


def _customers(tmp_path: Path, rows: str) -> Path:
    return _write(tmp_path / "customers.csv", "external_id,email,signup_date\n" + rows)


def _events(engine, **where) -> list[dict]:
    t = CustomerEvent.__table__
    query = select(t).order_by(t.c.event_id)
    for key, value in where.items():
        query = query.where(t.c[key] == value)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _store(engine, events, **kw) -> list[ce.Verdict]:
    with engine.begin() as conn:
        return ce.store_events(conn, events, types=kw.pop("types", TYPES), now=kw.pop("now", NOW), **kw)


def _cart(event_id: str, **fields) -> dict:
    base = {
        "event_id": event_id,
        "type": "cart_abandoned",
        "occurred_at": "2026-12-04T10:00:00+01:00",
        "external_id": "C1",
        "properties": {"cart_value": 89.9, "items": 3, "category": "mode"},
    }
    return {**base, **fields}


def _customer_id(engine, external_id: str) -> int:
    t = Customer.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.id).where(t.c.external_id == external_id)).scalar_one()


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------


def test_the_same_event_id_twice_is_stored_once(engine, tmp_path):
    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    first = _store(engine, [_cart("e1"), _cart("e2")])
    assert [v.outcome for v in first] == ["accepted", "accepted"]
    again = _store(engine, [_cart("e1"), _cart("e2", properties={"items": 9}), _cart("e3")])
    assert [v.outcome for v in again] == ["duplicate", "duplicate", "accepted"]
    assert again[0].why == "already stored"
    inside = _store(engine, [_cart("e4"), _cart("e4")])
    assert [v.outcome for v in inside] == ["accepted", "duplicate"]
    assert inside[1].why == "same event_id as event 0 of this batch"
    stored = _events(engine, type="cart_abandoned")
    assert [e["event_id"] for e in stored] == ["e1", "e2", "e3", "e4"]
    e1 = stored[0]
    assert e1["customer_id"] == _customer_id(engine, "C1")
    assert e1["properties"] == {"cart_value": 89.9, "items": 3, "category": "mode"}  # the first one kept
    assert e1["occurred_at"] == datetime(2026, 12, 4, 9, 0, tzinfo=UTC) and e1["source"] == "api"


def test_a_bad_event_never_refuses_the_good_ones_of_its_batch(engine, tmp_path):
    batch = [
        _cart("ok-1"),
        _cart("bad-type", type="cart_abandonned"),
        _cart("bad-prop", properties={"items": "trois"}),
        _cart("bad-key", properties={"cart_valeu": 3}),
        {"type": "product_viewed", "external_id": "C1"},
        _cart("nobody", external_id=None),
        _cart("builtin", type="order_placed", properties={}),
        _cart("future", occurred_at=(NOW + timedelta(days=3)).isoformat()),
        _cart("naive", occurred_at="2026-12-04T10:00:00"),
        _cart("bad-mail", external_id=None, email="not an address"),
        "not an object",
        _cart("extra", customer="C1"),
        {"event_id": "ok-2", "type": "signed_up_newsletter", "email": "New@Example.FR"},
    ]
    verdicts = _store(engine, batch)
    assert [v.index for v in verdicts] == list(range(len(batch)))
    assert [v.outcome for v in verdicts] == ["accepted"] + ["refused"] * 11 + ["accepted"]
    why = {v.event_id or v.index: v.why for v in verdicts if v.outcome == "refused"}
    assert "unknown event type `cart_abandonned`; did you mean `cart_abandoned`?" in why["bad-type"]
    assert why["bad-prop"].startswith('property `items` of `cart_abandoned` is "trois" but is declared')
    assert "unknown property `cart_valeu` for `cart_abandoned`; did you mean `cart_value`?" in why["bad-key"]
    assert why[4].startswith("`event_id` is missing")
    assert why["nobody"] == "give the customer's `external_id` or `email`"
    assert "produced by relance itself" in why["builtin"]
    assert "in the future" in why["future"] and "has no offset" in why["naive"]
    assert "bad-mail" in why and why[10].startswith("an event is an object")
    assert "unknown field(s) customer" in why["extra"]
    summary = ce.summary(verdicts)
    assert (summary["accepted"], summary["duplicates"], len(summary["refused"])) == (2, 0, 11)
    assert summary["refused"][0] == {"index": 1, "event_id": "bad-type", "why": why["bad-type"]}
    assert [e["event_id"] for e in _events(engine)] == ["ok-1", "ok-2"]
    assert _events(engine, event_id="ok-2")[0]["email"] == "new@example.fr"  # normalized


def test_events_of_erased_customers_are_refused(engine, tmp_path):
    from audiences.privacy import forget

    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    forget("C1", engine)
    [verdict] = _store(engine, [_cart("e1")])
    assert verdict.outcome == "refused" and "was erased" in verdict.why


# --------------------------------------------------------------------------
# Unknown customers, then the import
# --------------------------------------------------------------------------


def test_events_of_unknown_customers_wait_for_the_customer_import(engine, tmp_path):
    verdicts = _store(
        engine,
        [
            _cart("by-id", external_id="C7"),
            _cart("by-mail", external_id=None, email="Paul.Martin@Example.fr"),
            _cart("by-unknown-id-and-mail", external_id="OLD-9", email="paul.martin@example.fr"),
            _cart("still-unknown", external_id="C404"),
        ],
    )
    assert {v.outcome for v in verdicts} == {"accepted"}
    assert all(e["customer_id"] is None for e in _events(engine))  # kept, not lost

    report = import_customers(_customers(tmp_path, "C7,c7@example.fr,\nC8,paul.martin@example.fr,\n"), engine)
    assert report.inserted == 2
    attached = {e["event_id"]: e["customer_id"] for e in _events(engine, type="cart_abandoned")}
    c7, c8 = _customer_id(engine, "C7"), _customer_id(engine, "C8")
    assert attached == {"by-id": c7, "by-mail": c8, "by-unknown-id-and-mail": c8, "still-unknown": None}
    # after the import, new events find the customer at once
    _store(engine, [_cart("later", external_id="C7")])
    assert _events(engine, event_id="later")[0]["customer_id"] == c7


def test_an_email_shared_by_two_customers_attaches_nothing(engine, tmp_path):
    _store(engine, [_cart("shared", external_id=None, email="family@example.fr")])
    import_customers(_customers(tmp_path, "A1,family@example.fr,\nA2,family@example.fr,\n"), engine)
    assert _events(engine, event_id="shared")[0]["customer_id"] is None
    with engine.begin() as conn:
        assert ce.attach_unknown(conn) == 0


# --------------------------------------------------------------------------
# Built-in events
# --------------------------------------------------------------------------


def test_customer_created_for_new_customers_only(engine, tmp_path):
    import_customers(_customers(tmp_path, "C1,C1@Example.fr,\n"), engine)
    import_customers(_customers(tmp_path, "C1,changed@example.fr,\nC2,,\n"), engine)
    created = _events(engine, type="customer_created")
    assert [(e["event_id"], e["external_id"], e["source"]) for e in created] == [
        ("customer_created:C1", "C1", "relance"),
        ("customer_created:C2", "C2", "relance"),
    ]
    assert created[0]["email"] == "c1@example.fr" and created[0]["customer_id"] == _customer_id(engine, "C1")


def test_order_placed_from_import_orders(engine, tmp_path):
    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    recent = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
    old = recent - timedelta(days=3 * 365)  # past order_placed's retention (730 days): no event
    orders = _write(
        tmp_path / "orders.csv",
        "external_id,customer_external_id,ordered_at,amount,currency,category,product\n"
        f"O1,C1,{recent.isoformat()},50.00,EUR,Mode,robe-01\n"
        f'O2,C1,{recent.isoformat()},"30,50",EUR,,\n'
        f"O3,C404,{recent.isoformat()},10,EUR,,\n"
        f"O4,C1,{old.isoformat()},10,EUR,,\n",
    )
    report = import_orders(orders, engine)
    assert (report.inserted, len(report.rejected)) == (3, 1)
    placed = _events(engine, type="order_placed")
    assert [e["event_id"] for e in placed] == ["order:O1", "order:O2"]
    assert placed[0]["properties"] == {
        "order_id": "O1", "amount": 50.0, "currency": "EUR", "category": "mode", "product": "robe-01",
    }  # fmt: skip
    assert placed[1]["properties"] == {"order_id": "O2", "amount": 30.5, "currency": "EUR"}
    assert placed[0]["occurred_at"] == recent
    assert placed[0]["customer_id"] == _customer_id(engine, "C1") and placed[0]["external_id"] == "C1"
    assert import_orders(orders, engine).inserted == 0
    assert len(_events(engine, type="order_placed")) == 2  # re-import: nothing twice


def test_order_placed_from_the_conversions_api(engine, tmp_path):
    from fastapi.testclient import TestClient

    from core.settings import get_settings
    from tracking.app import create_app

    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    app = create_app(get_settings().model_copy(update={"conversions_api_key": "k"}))
    body = {"order_id": "web-1", "customer_external_id": "C1", "amount_cents": 12900,
            "ordered_at": "2026-12-04T10:00:00+01:00"}  # fmt: skip
    with TestClient(app) as client:
        assert client.post("/events/conversions", json=body, headers={"X-API-Key": "k"}).status_code == 200
        assert client.post("/events/conversions", json=body, headers={"X-API-Key": "k"}).status_code == 200
    [placed] = _events(engine, type="order_placed")
    assert placed["event_id"] == "order:web-1" and placed["customer_id"] == _customer_id(engine, "C1")
    assert placed["properties"] == {"order_id": "web-1", "amount": 129.0, "currency": "EUR"}
    assert placed["occurred_at"] == datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def _order(conn, customer_id: int, external_id: str, at: datetime) -> None:
    from core.models import Order

    conn.execute(
        Order.__table__.insert().values(
            external_id=external_id, customer_id=customer_id, ordered_at=at, amount_cents=1000
        )
    )


def test_derived_daily_events_are_idempotent(engine, tmp_path):
    today = date(2026, 12, 4)
    import_customers(
        _customers(
            tmp_path,
            "ANNIV,a@example.fr,2020-06-01\n"  # first order 2024-12-04: 2 years today
            "SIGNUP,s@example.fr,2023-12-04\n"  # signed up 3 years ago today
            "LAPS60,l60@example.fr,\n"  # last order 60 days ago
            "LAPS90,l90@example.fr,\n"  # last order 90 days ago
            "RECENT,r@example.fr,2026-12-04\n",  # signed up today: no anniversary yet
        ),
        engine,
    )
    ids = {k: _customer_id(engine, k) for k in ("ANNIV", "SIGNUP", "LAPS60", "LAPS90", "RECENT")}
    with engine.begin() as conn:
        _order(conn, ids["ANNIV"], "A-1", datetime(2024, 12, 4, 15, 30, tzinfo=UTC))
        _order(conn, ids["ANNIV"], "A-2", datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
        _order(conn, ids["LAPS60"], "L-1", datetime(2026, 10, 5, 18, 0, tzinfo=UTC))
        _order(conn, ids["LAPS90"], "L-2", datetime(2026, 9, 5, 8, 0, tzinfo=UTC))
        _order(conn, ids["RECENT"], "R-1", datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    with engine.begin() as conn:
        counts = ce.derive_daily(conn, today, lapsing_days=[60, 90])
    assert counts == {"first_order_anniversary": 1, "signup_anniversary": 1, "lapsing": 2}
    with engine.begin() as conn:
        assert ce.derive_daily(conn, today, lapsing_days=[60, 90]) == {
            "first_order_anniversary": 0, "signup_anniversary": 0, "lapsing": 0,
        }  # fmt: skip
    derived = {e["event_id"]: e for e in _events(engine, source="relance") if e["type"] != "customer_created"}
    midnight = datetime(2026, 12, 4, tzinfo=UTC)
    anniv = derived[f"first_order_anniversary:{ids['ANNIV']}:2026"]
    assert anniv["properties"] == {"years": 2, "first_order_at": "2024-12-04T15:30:00+00:00"}
    assert anniv["occurred_at"] == midnight and anniv["customer_id"] == ids["ANNIV"]
    assert derived[f"signup_anniversary:{ids['SIGNUP']}:2026"]["properties"] == {
        "years": 3, "signup_date": "2023-12-04",
    }  # fmt: skip
    lapse60 = derived[f"lapsing:{ids['LAPS60']}:60:2026-10-05"]
    assert lapse60["properties"] == {"days": 60, "last_order_at": "2026-10-05T18:00:00+00:00"}
    assert derived[f"lapsing:{ids['LAPS90']}:90:2026-09-05"]["properties"]["days"] == 90
    assert len(derived) == 4
    # the properties read as JSON in SQL on both databases, as the `event:` rules will
    t = CustomerEvent.__table__
    with engine.connect() as conn:
        days = conn.execute(
            select(t.c.properties["days"].as_integer()).where(t.c.type == "lapsing").order_by(t.c.event_id)
        ).scalars()
        assert sorted(days) == [60, 90]


def test_a_29_february_anniversary_falls_on_28_february(engine, tmp_path):
    import_customers(_customers(tmp_path, "LEAP,leap@example.fr,2024-02-29\n"), engine)
    with engine.begin() as conn:
        assert ce.derive_daily(conn, date(2027, 2, 27), [])["signup_anniversary"] == 0
        assert ce.derive_daily(conn, date(2027, 2, 28), [])["signup_anniversary"] == 1
        assert ce.derive_daily(conn, date(2028, 2, 28), [])["signup_anniversary"] == 0  # leap: the 29th
        assert ce.derive_daily(conn, date(2028, 2, 29), [])["signup_anniversary"] == 1


def test_purge_drops_events_past_their_type_retention(engine, tmp_path):
    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    old = (NOW - timedelta(days=40)).isoformat()
    _store(
        engine,
        [
            _cart("cart-old", occurred_at=old),  # cart_abandoned: 90 days
            {"event_id": "view-old", "type": "product_viewed", "external_id": "C1", "occurred_at": old},  # 30
            {"event_id": "view-new", "type": "product_viewed", "external_id": "C1"},
        ],
    )
    with engine.begin() as conn:
        assert ce.purge_expired(conn, NOW, TYPES) == 1
    assert [e["event_id"] for e in _events(engine) if e["source"] == "api"] == ["cart-old", "view-new"]


# --------------------------------------------------------------------------
# The types file, the CSV backfill
# --------------------------------------------------------------------------


def test_the_types_file_reports_file_line_and_what_to_write(tmp_path):
    bad = _write(
        tmp_path / "events.yaml",
        "events:\n"
        "  lapsing:\n"
        "    description: mine\n"
        "  Cart:\n"
        "    properties:\n"
        "      value: numbr\n"
        "    retention_day: 3\n",
    )
    with pytest.raises(SpecError) as caught:
        EventTypes.load(bad)
    lines = str(caught.value).splitlines()
    assert lines[0].endswith(":6:14: `value: numbr` is not allowed here; did you mean `number`? "
                             "write one of: string, number, integer, boolean, datetime")  # fmt: skip
    assert lines[1].endswith(
        ":7:5: unknown key `retention_day` in events.Cart; did you mean `retention_days`?"
    )
    fixed = _write(tmp_path / "events.yaml", "events:\n  lapsing: {}\n  Cart: {}\n")
    with pytest.raises(SpecError) as caught:
        EventTypes.load(fixed)
    assert ":2:3: `lapsing` is a built-in event produced by relance" in str(caught.value)
    assert ":3:3: `Cart` is not a valid event name" in str(caught.value)
    only_builtin = EventTypes.load(tmp_path / "missing.yaml")
    assert "cart_abandoned" not in only_builtin and "lapsing" in only_builtin


def test_import_events_reports_each_bad_line_and_reruns_as_a_noop(engine, tmp_path):
    import_customers(_customers(tmp_path, "C1,c1@example.fr,\n"), engine)
    path = _write(
        tmp_path / "events.csv",
        "event_id,type,occurred_at,external_id,email,properties\n"
        'b1,cart_abandoned,2026-11-20 10:00,C1,,"{""cart_value"": 42.5, ""items"": 2}"\n'
        "b2,product_viewed,2026-11-20T10:00:00Z,,C1@example.fr,\n"
        "b3,cart_abandoned,2026-11-20T10:00:00Z,C1,,{not json}\n"
        'b4,cart_abandoned,2026-11-20T10:00:00Z,C1,,"{""items"": ""x""}"\n'
        "b5,order_placed,2026-11-20T10:00:00Z,C1,,\n"
        "b2,product_viewed,2026-11-20T10:00:00Z,C1,,\n"
        "b6,signed_up_newsletter,2026-11-20T10:00:00Z,NEW-1,,\n",
    )
    report = import_events(path, engine)
    assert (report.rows, report.inserted, report.unchanged) == (7, 3, 0)
    problems = {p.line: p.reason for p in report.rejected}
    assert sorted(problems) == [4, 5, 6, 7]
    assert problems[4].startswith("properties '{not json}' is not JSON")
    assert problems[5].startswith('property `items` of `cart_abandoned` is "x" but is declared integer')
    assert "produced by relance itself" in problems[6]
    assert problems[7] == "duplicate event_id 'b2': already on line 3, which is kept"
    b1 = _events(engine, event_id="b1")[0]
    assert b1["source"] == "import" and b1["properties"] == {"cart_value": 42.5, "items": 2}
    assert b1["occurred_at"] == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # naive: Europe/Paris
    again = import_events(path, engine)
    assert (again.inserted, again.unchanged) == (0, 3)


def test_relance_import_events_cli(db_url, tmp_path):
    from typer.testing import CliRunner

    from relance.cli import app

    path = _write(
        tmp_path / "events.csv",
        "event_id,type,occurred_at,external_id\nx1,signed_up_newsletter,2026-11-20T10:00:00Z,C1\n"
        "x2,nope,2026-11-20T10:00:00Z,C1\n",
    )
    result = CliRunner().invoke(app, ["import", "events", str(path)])
    assert result.exit_code == 0, result.output
    assert "inserted" in result.output and "line 3 (x2): unknown event type `nope`" in result.output
    with __import__("core.db", fromlist=["get_engine"]).get_engine(db_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM customer_event")).scalar_one() == 1


def test_relance_events_derive_and_purge_cli(db_url, tmp_path):
    from typer.testing import CliRunner

    from core.db import get_engine
    from relance.cli import app

    engine = get_engine(db_url)
    import_customers(_customers(tmp_path, "S1,s1@example.fr,2022-12-04\n"), engine)
    runner = CliRunner()
    old_day = ["events", "derive", "--date", "2024-12-04"]  # signup_anniversary: kept 400 days
    first = runner.invoke(app, old_day)
    assert first.exit_code == 0, first.output
    assert "signup_anniversary: 1" in first.output
    assert "signup_anniversary: 0" in runner.invoke(app, old_day).output
    assert runner.invoke(app, ["events", "derive", "--date", "4/12"]).exit_code == 1
    purged = runner.invoke(app, ["events", "purge"])
    assert purged.exit_code == 0 and "1 event(s) past their retention deleted" in purged.output
    assert [e["type"] for e in _events(engine)] == ["customer_created"]
