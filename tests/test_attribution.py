"""Attribution: last touch within the campaign's window (edges included), control groups, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.models import Order
from tests.test_tracking_support import API_KEY, client_for, events_of, make_keys, seed, sent_sms, status_of
from tracking.attribution import ConversionSettings, Purchase, attribute, attribute_purchases
from tracking.events import NormalizedEvent, store_events

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def campaigns(tmp_path):
    d = tmp_path / "campaigns"
    d.mkdir()
    (d / "clicky.yaml").write_text("name: clicky\nmessage: m\nconversion:\n  window_days: 7\n")
    (d / "opener.yaml").write_text(
        "name: opener\nmessage: m\nconversion:\n  window_days: 3\n  attribution: open\n"
    )
    (d / "receiver.yaml").write_text(
        "name: receiver\nmessage: m\nconversion:\n  window_days: 2\n  attribution: receive\n"
    )
    return ConversionSettings(d)


def _touch(engine, ledger_id, kind, at, machine=False):
    with engine.begin() as conn:
        store_events(
            conn,
            [
                NormalizedEvent(
                    type=kind, provider="relance", ledger_id=ledger_id, occurred_at=at, machine=machine
                )
            ],
        )


def _attribute(engine, campaigns, customer_id, at, order="o1", amount=5000):
    with engine.begin() as conn:
        return attribute_purchases(conn, [Purchase(order, customer_id, at, amount)], campaigns)


@pytest.mark.parametrize(
    ("offset", "attributed"),
    [
        (timedelta(0), True),  # the very instant of the click: inclusive start
        (timedelta(days=7) - timedelta(microseconds=1), True),
        (timedelta(days=7), False),  # exactly window_days later: exclusive end
        (-timedelta(seconds=1), False),  # before the click
    ],
)
def test_click_window_edges(sqlite_engine, campaigns, offset, attributed):
    world = seed(sqlite_engine, n=1, campaign="clicky", sent_at=T0 - timedelta(hours=1))
    lid, cid = world.ledger_ids[0], world.customer_ids[0]
    _touch(sqlite_engine, lid, "clicked", T0)
    result = _attribute(sqlite_engine, campaigns, cid, T0 + offset)
    assert result.attributed == (1 if attributed else 0)
    converted = events_of(sqlite_engine, type="converted")
    assert len(converted) == (1 if attributed else 0)
    assert status_of(sqlite_engine, lid) == ("converted" if attributed else "clicked")
    if attributed:
        assert converted[0].revenue_cents == 5000 and converted[0].ledger_id == lid
        assert result.revenue_cents == 5000


def test_last_click_wins_and_machine_clicks_do_not_count(sqlite_engine, campaigns):
    first = seed(sqlite_engine, n=1, campaign="clicky", sent_at=T0)
    cid = first.customer_ids[0]
    second = seed(sqlite_engine, n=0, campaign="clicky", sent_at=T0)
    lid2 = sent_sms(sqlite_engine, second.run_id, "clicky", cid, T0)  # a second message, another run
    _touch(sqlite_engine, first.ledger_ids[0], "clicked", T0 + timedelta(hours=1))
    _touch(sqlite_engine, lid2, "clicked", T0 + timedelta(hours=2))
    _touch(sqlite_engine, first.ledger_ids[0], "clicked", T0 + timedelta(hours=3), machine=True)  # a scanner
    result = _attribute(sqlite_engine, campaigns, cid, T0 + timedelta(hours=4))
    assert result.attributed_ledger_ids == [lid2]


def test_open_and_receive_attribution(sqlite_engine, campaigns):
    opener = seed(sqlite_engine, n=2, campaign="opener", sent_at=T0)
    _touch(sqlite_engine, opener.ledger_ids[0], "opened", T0 + timedelta(hours=1))
    _touch(sqlite_engine, opener.ledger_ids[1], "opened", T0 + timedelta(hours=1), machine=True)
    assert (
        _attribute(sqlite_engine, campaigns, opener.customer_ids[0], T0 + timedelta(days=2), "a").attributed
        == 1
    )
    assert (
        _attribute(sqlite_engine, campaigns, opener.customer_ids[1], T0 + timedelta(days=2), "b").attributed
        == 0
    )

    receiver = seed(sqlite_engine, n=1, campaign="receiver", sent_at=T0)
    cid = receiver.customer_ids[0]
    assert (
        _attribute(sqlite_engine, campaigns, cid, T0 + timedelta(days=2), "c").attributed == 0
    )  # exclusive end
    assert _attribute(sqlite_engine, campaigns, cid, T0 + timedelta(days=1), "d").attributed == 1


def test_control_group_conversions_are_recorded_without_touching_status(sqlite_engine, campaigns):
    world = seed(sqlite_engine, n=2, campaign="receiver", control=(1,), sent_at=T0)
    treated, held = world.ledger_ids
    result = _attribute(sqlite_engine, campaigns, world.customer_ids[1], T0 + timedelta(days=1), "h1", 4200)
    assert (result.attributed, result.control, result.control_ledger_ids) == (0, 1, [held])
    (event,) = events_of(sqlite_engine, type="converted")
    assert (event.ledger_id, event.subtype, event.revenue_cents) == (held, "control", 4200)
    assert status_of(sqlite_engine, held) == "held_out"
    late = _attribute(sqlite_engine, campaigns, world.customer_ids[1], T0 + timedelta(days=2), "h2")
    assert late.control == 0  # same window rule for the control group (from the run's start)
    assert status_of(sqlite_engine, treated) == "sent"


def test_attribute_imported_orders_is_idempotent(engine, campaigns, monkeypatch):
    world = seed(engine, n=3, campaign="receiver", control=(2,), sent_at=T0)
    with engine.begin() as conn:
        for i, (cid, at) in enumerate(
            zip(
                world.customer_ids,
                [T0 + timedelta(hours=5), T0 - timedelta(days=1), T0 + timedelta(hours=1)],
                strict=True,
            )
        ):
            conn.execute(
                Order.__table__.insert().values(
                    external_id=f"ord-{i}", customer_id=cid, ordered_at=at, amount_cents=1000 * (i + 1)
                )
            )
    with engine.begin() as conn:
        first = attribute(conn, campaigns_dir=campaigns.dir)
    assert (first.orders, first.attributed, first.control, first.revenue_cents) == (2, 1, 1, 1000)
    with engine.begin() as conn:
        again = attribute(conn, campaigns_dir=campaigns.dir)
    assert (again.attributed, again.control) == (0, 0)
    with engine.begin() as conn:
        later = attribute(conn, since=T0 + timedelta(hours=2), campaigns_dir=campaigns.dir)
    assert later.orders == 1
    assert len(events_of(engine, type="converted")) == 2
    assert status_of(engine, world.ledger_ids[0]) == "converted"


def test_conversions_api(sqlite_engine, settings, monkeypatch):
    world = seed(sqlite_engine, n=2, control=(1,), sent_at=datetime.now(UTC) - timedelta(hours=1))
    lid = world.ledger_ids[0]
    _touch(sqlite_engine, lid, "clicked", datetime.now(UTC) - timedelta(minutes=30))
    body = {"order_id": "web-1", "customer_id": world.customer_ids[0], "amount_cents": 12900}
    with client_for(settings, make_keys()) as client:
        assert client.post("/events/conversions", json=body).status_code == 401
        assert client.post("/events/conversions", json=body, headers={"X-API-Key": "nope"}).status_code == 401
        ok = client.post("/events/conversions", json=body, headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200 and ok.json()["attributed_ledger_id"] == lid
        again = client.post("/events/conversions", json=body, headers={"X-API-Key": API_KEY})
        assert again.json()["stored"] == 0
        naive = dict(body, order_id="web-2", ordered_at="2026-11-22T10:00:00")
        assert (
            client.post("/events/conversions", json=naive, headers={"X-API-Key": API_KEY}).status_code == 422
        )
        unknown = dict(body, customer_id=None, customer_external_id="nobody")
        assert (
            client.post("/events/conversions", json=unknown, headers={"X-API-Key": API_KEY}).status_code
            == 404
        )
        control = {
            "order_id": "web-3",
            "customer_external_id": _external(sqlite_engine, world.customer_ids[1]),
            "amount_cents": 500,
        }
        r = client.post("/events/conversions", json=control, headers={"X-API-Key": API_KEY})
        assert r.json()["control_ledger_ids"] == [world.ledger_ids[1]]
    assert status_of(sqlite_engine, lid) == "converted"
    assert sorted(e.revenue_cents for e in events_of(sqlite_engine, type="converted")) == [500, 12900]


def _external(engine, cid):
    from core.models import Customer

    t = Customer.__table__
    with engine.connect() as conn:
        return conn.execute(select(t.c.external_id).where(t.c.id == cid)).scalar_one()


@pytest.mark.parametrize("flag", ["--attribute", "--no-attribute"])
def test_import_orders_attributes_recent_purchases(sqlite_engine, tmp_path, flag):
    """`relance import orders` turns a purchase after a click into a conversion (unless told not to)."""
    from typer.testing import CliRunner

    from core.models import Customer
    from relance.cli import app

    now = datetime.now(UTC)
    world = seed(sqlite_engine, n=2, campaign="winback", sent_at=now - timedelta(days=2))
    _touch(sqlite_engine, world.ledger_ids[0], "clicked", now - timedelta(days=1))
    with sqlite_engine.connect() as conn:
        ext = dict(conn.execute(select(Customer.id, Customer.external_id)).all())
    bought = (now - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "external_id,customer_external_id,ordered_at,amount,currency,category,product,payment_method\n"
        f"W1,{ext[world.customer_ids[0]]},{bought},42.50,EUR,mode,robe-01,card\n"
        f"W2,{ext[world.customer_ids[1]]},{bought},10.00,EUR,mode,robe-02,card\n"  # no click: no conversion
    )
    result = CliRunner().invoke(app, ["import", "orders", str(orders), flag], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    converted = events_of(sqlite_engine, type="converted")
    if flag == "--attribute":
        assert [(e.ledger_id, e.revenue_cents) for e in converted] == [(world.ledger_ids[0], 4250)]
        assert "1 purchase(s) attributed" in result.output
        assert status_of(sqlite_engine, world.ledger_ids[0]) == "converted"
    else:
        assert converted == [] and "attributed" not in result.output


def test_a_treated_purchase_without_a_click_is_recorded_as_a_window_purchase(sqlite_engine, campaigns):
    """Uplift compares like with like: the treated buyer who never clicked bought within the window too."""
    world = seed(sqlite_engine, n=3, campaign="clicky", sent_at=T0)
    clicker, quiet, late = world.ledger_ids
    _touch(sqlite_engine, clicker, "clicked", T0 + timedelta(hours=1))
    assert (
        _attribute(sqlite_engine, campaigns, world.customer_ids[0], T0 + timedelta(hours=2), "k").window == 0
    )
    result = _attribute(sqlite_engine, campaigns, world.customer_ids[1], T0 + timedelta(days=1), "q", 3100)
    assert (result.attributed, result.control, result.window, result.window_ledger_ids) == (0, 0, 1, [quiet])
    # exactly window_days after the send: out, as for the control group
    assert (
        _attribute(sqlite_engine, campaigns, world.customer_ids[2], T0 + timedelta(days=7), "z").window == 0
    )

    (event,) = events_of(sqlite_engine, type="purchased")
    assert (event.ledger_id, event.provider_event_id, event.revenue_cents) == (
        quiet,
        f"q:window:{quiet}",
        3100,
    )
    assert [e.ledger_id for e in events_of(sqlite_engine, type="converted")] == [clicker]  # credit unchanged
    assert (status_of(sqlite_engine, quiet), status_of(sqlite_engine, late)) == ("sent", "sent")
    again = _attribute(sqlite_engine, campaigns, world.customer_ids[1], T0 + timedelta(days=1), "q", 3100)
    assert again.window == 0 and len(events_of(sqlite_engine, type="purchased")) == 1


def test_a_touch_reported_late_moves_no_window_purchase_onto_the_credited_row(sqlite_engine, campaigns):
    """The first credit stored wins; the order is not also a window purchase of that row."""

    first = seed(sqlite_engine, n=1, campaign="clicky", sent_at=T0)
    cid, lid1 = first.customer_ids[0], first.ledger_ids[0]
    second = seed(sqlite_engine, n=0, campaign="clicky", sent_at=T0)
    lid2 = sent_sms(sqlite_engine, second.run_id, "clicky", cid, T0)
    _touch(sqlite_engine, lid1, "clicked", T0 + timedelta(hours=1))
    assert _attribute(sqlite_engine, campaigns, cid, T0 + timedelta(hours=4), "o").window_ledger_ids == [lid2]
    _touch(sqlite_engine, lid2, "clicked", T0 + timedelta(hours=2))  # a click whose webhook came late
    again = _attribute(sqlite_engine, campaigns, cid, T0 + timedelta(hours=4), "o")
    assert (again.attributed, again.window) == (0, 0)
    assert [e.ledger_id for e in events_of(sqlite_engine, type="converted")] == [lid1]
    assert [e.ledger_id for e in events_of(sqlite_engine, type="purchased")] == [lid2]
