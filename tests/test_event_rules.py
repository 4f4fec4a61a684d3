"""`event:` rules: each operator and count form against an independent pandas count, on SQLite and PostgreSQL.

The same seeded random events are inserted into ``customer_event`` and kept in a
DataFrame; the rule's members computed by the database must equal the customers
whose matching events, counted by pandas, lie between min_count and max_count.
The pandas side never uses the compiler: it reads the rule as written (a dict).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import insert, select, text

from audiences.event_rules import EVENTS
from audiences.rule_context import CUSTOMER, RuleContext, RuleError, from_clause
from audiences.rules import compile_rule
from core.spec import Rule

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
EVENTS_YAML = """\
events:
  cart_abandoned:
    properties:
      cart_value: number
      items: integer
      category: string
      gift: boolean
      seen_at: datetime
  page_viewed:
    properties:
      category: string
"""
KINDS = {
    "cart_value": "number",
    "items": "integer",
    "category": "string",
    "gift": "boolean",
    "seen_at": "datetime",
}
CATEGORIES = ["mode", "beaute", "maison", "sport"]
RULE = TypeAdapter(Rule)


@pytest.fixture
def events_file(tmp_path, monkeypatch):
    from core.settings import get_settings

    path = tmp_path / "events.yaml"
    path.write_text(EVENTS_YAML, encoding="utf-8")
    monkeypatch.setenv("RELANCE_EVENTS_FILE", str(path))
    get_settings.cache_clear()
    return path


def _random_properties(rnd: random.Random) -> dict[str, Any]:
    """Some properties missing, a few null or of the wrong JSON type (they must read as missing)."""
    props: dict[str, Any] = {}
    if rnd.random() < 0.85:
        props["cart_value"] = rnd.choice([round(rnd.uniform(0, 200), 2), rnd.randint(0, 200), 50, 100])
    elif rnd.random() < 0.5:
        props["cart_value"] = rnd.choice(["abc", None, True])
    if rnd.random() < 0.8:
        props["items"] = rnd.randint(1, 6)
    if rnd.random() < 0.9:
        props["category"] = rnd.choice(CATEGORIES) if rnd.random() < 0.95 else 7
    if rnd.random() < 0.7:
        props["gift"] = rnd.random() < 0.4
    if rnd.random() < 0.7:
        moment = NOW - timedelta(days=rnd.uniform(0, 30))
        props["seen_at"] = moment.astimezone(UTC).isoformat()
    return props


@pytest.fixture
def base(engine, events_file) -> tuple[Any, pd.DataFrame, list[int]]:
    """60 customers, ~200 random events (some of unknown customers, some after NOW), same rows in pandas."""
    rnd = random.Random(18)
    rows: list[dict[str, Any]] = []
    with engine.begin() as c:
        ids = [
            c.execute(
                insert(CUSTOMER)
                .values(
                    external_id=f"c{i}",
                    locale="fr_FR",
                    timezone="Europe/Paris",
                    created_at=NOW,
                    updated_at=NOW,
                )
                .returning(CUSTOMER.c.id)  # fmt: skip
            ).scalar_one()
            for i in range(60)
        ]
        for n in range(220):
            rows.append(
                {
                    "event_id": f"e{n}",
                    "type": rnd.choice(["cart_abandoned", "cart_abandoned", "page_viewed"]),
                    "customer_id": rnd.choice(ids[:45]) if rnd.random() < 0.93 else None,  # c45..: none
                    "external_id": None,
                    "occurred_at": NOW - timedelta(days=rnd.uniform(-2, 60)),  # a few in the future
                    "received_at": NOW,
                    "properties": _random_properties(rnd),
                    "source": "api",
                }
            )
        # the edges of a 7-day window: exactly 7 days ago is out, exactly now is in
        for k, moment in enumerate((NOW - timedelta(days=7), NOW)):
            edge = {"event_id": f"edge{k}", "customer_id": ids[50 + k], "type": "cart_abandoned"}
            rows.append({**rows[0], **edge, "occurred_at": moment, "properties": {"cart_value": 10}})
        c.execute(insert(EVENTS), rows)
    frame = pd.DataFrame(rows)
    return engine, frame, ids


def db_members(engine, rule: dict) -> set[int]:
    ctx = RuleContext(NOW)
    cond = compile_rule(RULE.validate_python(rule), ctx)
    with engine.connect() as c:
        return set(c.execute(select(CUSTOMER.c.id).select_from(from_clause(ctx)).where(cond)).scalars())


# --------------------------------------------------------------------------
# The independent computation (pandas + plain Python on the rule as written)
# --------------------------------------------------------------------------


def _typed(value: Any, kind: str) -> Any:
    """The value as the rule reads it, or None when missing or of another JSON type than declared."""
    if kind in ("number", "integer"):
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "datetime" and isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC).date()
    return None


def _arg(value: Any, kind: str) -> Any:
    if kind == "datetime":
        return value if isinstance(value, date) else date.fromisoformat(value)
    return float(value) if kind in ("number", "integer") else value


def _holds(value: Any, ops: dict[str, Any], kind: str) -> bool:
    for op, arg in ops.items():
        if op == "is_null":
            ok = (value is None) == arg
        elif value is None:
            ok = False  # SQL: a comparison with an unknown value is not true
        elif op in ("in", "not_in"):
            ok = (value in [_arg(a, kind) for a in arg]) == (op == "in")
        elif op == "between":
            ok = _arg(arg[0], kind) <= value <= _arg(arg[1], kind)
        else:
            a = _arg(arg, kind)
            ok = {"eq": value == a, "ne": value != a, "gt": value > a, "gte": value >= a,
                  "lt": value < a, "lte": value <= a}[op]  # fmt: skip
        if not ok:
            return False
    return True


def expected(frame: pd.DataFrame, ids: list[int], event: dict[str, Any]) -> set[int]:
    e = frame[(frame["type"] == event["name"]) & frame["customer_id"].notna()]
    if "within_days" in event:
        e = e[(e["occurred_at"] > NOW - timedelta(days=event["within_days"])) & (e["occurred_at"] <= NOW)]
    for prop, ops in event.get("where", {}).items():
        keep = e["properties"].map(lambda p, prop=prop, ops=ops: _holds(_typed(p.get(prop), KINDS[prop]), ops,
                                                                           KINDS[prop]))  # fmt: skip
        e = e[keep.astype(bool)]
    counts = e.groupby("customer_id").size().reindex(ids, fill_value=0)
    low = event.get("min_count", 0 if "max_count" in event else 1)
    high = event.get("max_count", float("inf"))
    return set(counts[(counts >= low) & (counts <= high)].index)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

OPERATOR_CASES: list[dict[str, Any]] = [
    {},
    {"cart_value": {"eq": 50}},
    {"cart_value": {"ne": 50}},
    {"cart_value": {"in": [50, 100]}},
    {"cart_value": {"not_in": [50, 100]}},
    {"cart_value": {"gt": 100}},
    {"cart_value": {"gte": 100}},
    {"cart_value": {"lt": 50}},
    {"cart_value": {"lte": 50}},
    {"cart_value": {"between": [20, 80]}},
    {"cart_value": {"gte": 20, "lt": 150}},
    {"cart_value": {"is_null": True}},
    {"cart_value": {"is_null": False}},
    {"items": {"gte": 3}},
    {"items": {"eq": 2}},
    {"category": {"eq": "mode"}},
    {"category": {"ne": "mode"}},
    {"category": {"in": ["mode", "sport"]}},
    {"category": {"not_in": ["mode"]}},
    {"category": {"is_null": True}},
    {"gift": {"eq": True}},
    {"gift": {"eq": False}},
    {"gift": {"is_null": True}},
    {"seen_at": {"gte": "2026-02-20"}},
    {"seen_at": {"lt": "2026-02-10"}},
    {"seen_at": {"eq": "2026-02-25"}},
    {"seen_at": {"between": ["2026-02-10", "2026-02-20"]}},
    {"cart_value": {"gte": 50}, "category": {"in": ["mode", "beaute"]}, "gift": {"eq": False}},
]


def test_each_operator_matches_pandas(base):
    engine, frame, ids = base
    nonempty = 0
    for where in OPERATOR_CASES:
        for within in (None, 20):
            event: dict[str, Any] = {"name": "cart_abandoned", "where": where}
            if within:
                event["within_days"] = within
            want = expected(frame, ids, event)
            assert db_members(engine, {"event": event}) == want, event
            nonempty += bool(want)
    assert nonempty >= len(OPERATOR_CASES)  # the cases select someone (and not always everyone)


COUNT_CASES: list[dict[str, Any]] = [
    {},
    {"min_count": 2},
    {"min_count": 3},
    {"min_count": 2, "max_count": 3},
    {"min_count": 1, "max_count": 1},
    {"max_count": 0},
    {"min_count": 0, "max_count": 0},
    {"max_count": 1},
    {"max_count": 2},
    {"min_count": 0, "max_count": 3},
    {"within_days": 7},
    {"within_days": 7, "max_count": 0},
    {"within_days": 30, "min_count": 2},
    {"within_days": 30, "max_count": 1},
    {"within_days": 30, "where": {"cart_value": {"gte": 50}}, "min_count": 2},
    {"within_days": 30, "where": {"category": {"eq": "mode"}}, "max_count": 0},
]


def test_each_count_form_matches_pandas(base):
    engine, frame, ids = base
    for case in COUNT_CASES:
        for name in ("cart_abandoned", "page_viewed"):
            if name == "page_viewed" and "where" in case:
                continue
            event = {"name": name, **case}
            want = expected(frame, ids, event)
            assert db_members(engine, {"event": event}) == want, event
            assert 0 < len(want) < len(ids) or case == {"min_count": 3}, event
    # never: customers without any event at all are included (c45.. have none)
    never = db_members(engine, {"event": {"name": "cart_abandoned", "max_count": 0}})
    assert set(ids[45:50]) <= never
    # the window is (now - 7 days, now]: the event exactly 7 days old is out, the one at now is in
    week = db_members(engine, {"event": {"name": "cart_abandoned", "within_days": 7}})
    assert ids[51] in week and ids[50] not in week


def test_event_rules_combine_with_not_any_and_other_rules(base):
    engine, frame, ids = base
    did = expected(frame, ids, {"name": "cart_abandoned", "min_count": 2})
    viewed = expected(frame, ids, {"name": "page_viewed", "within_days": 30})
    at_most_one = expected(frame, ids, {"name": "page_viewed", "max_count": 1})
    assert (
        db_members(engine, {"not": {"event": {"name": "cart_abandoned", "min_count": 2}}}) == set(ids) - did
    )
    assert (
        db_members(engine, {"not": {"event": {"name": "page_viewed", "max_count": 1}}})
        == set(ids) - at_most_one
    )
    rule = {"any": [{"event": {"name": "cart_abandoned", "min_count": 2}},
                    {"event": {"name": "page_viewed", "within_days": 30}}]}  # fmt: skip
    assert db_members(engine, rule) == did | viewed
    rule = {
        "all": [
            {"event": {"name": "page_viewed", "max_count": 1}},
            {"field": "external_id", "in": ["c1", "c50"]},
        ]
    }
    assert db_members(engine, rule) == at_most_one & {ids[1], ids[50]}


def test_a_segment_with_an_event_rule_in_a_campaign_plan(engine, events_file, tmp_path, monkeypatch):
    """segments.yaml -> campaign -> plan: the funnel's segment step equals the pandas count."""
    from audiences.plan import funnel
    from audiences.selection import build_selection
    from core.settings import get_settings
    from tests.test_plan import _random_base
    from tests.test_selection_support import campaign

    _random_base(engine, n=120)
    rnd = random.Random(5)
    with engine.begin() as c:
        people = list(c.execute(text("SELECT id, erased_at IS NULL FROM customer ORDER BY id")).all())
        rows = [
            {"event_id": f"s{n}", "type": "cart_abandoned", "customer_id": rnd.choice(people)[0],
             "occurred_at": NOW - timedelta(days=rnd.uniform(0, 40)), "received_at": NOW, "source": "api",
             "properties": _random_properties(rnd)}
            for n in range(300)
        ]  # fmt: skip
        c.execute(insert(EVENTS), rows)
    segments = tmp_path / "segments.yaml"
    segments.write_text(
        "segments:\n"
        "  cart_abandoners:\n"
        "    description: left a cart of 50 EUR or more twice in 30 days\n"
        "    rule:\n"
        "      event:\n"
        "        name: cart_abandoned\n"
        "        where: {cart_value: {gte: 50}}\n"
        "        min_count: 2\n"
        "        within_days: 30\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("RELANCE_SEGMENTS_FILE", str(segments))
    get_settings.cache_clear()
    camp = campaign(audience={"segment": "cart_abandoners"},
                    channels={"strategy": "preferred", "order": ["email", "sms", "push"]})  # fmt: skip
    with engine.connect() as c:
        plan = funnel(c, camp, NOW, priorities={})
        run = c.execute(build_selection(camp, NOW, bind=c, priorities={})).all()
    event = {
        "name": "cart_abandoned",
        "where": {"cart_value": {"gte": 50}},
        "min_count": 2,
        "within_days": 30,
    }
    all_ids = [p[0] for p in people]
    want = expected(pd.DataFrame(rows), all_ids, event) & {p[0] for p in people if p[1]}  # not erased
    steps = {s["step"]: s["count"] for s in plan["steps"]}
    assert steps["segment"] == len(want) > 0
    assert {r.customer_id for r in run} <= want
    assert plan["selected_customers"] == len({r.customer_id for r in run})


def test_unknown_names_and_bad_counts_are_refused_with_a_sentence(base):
    engine, _, _ = base
    with pytest.raises(
        RuleError, match="unknown event type `cart_abandonned`; did you mean `cart_abandoned`"
    ):
        db_members(engine, {"event": {"name": "cart_abandonned"}})
    with pytest.raises(RuleError, match="did you mean `cart_value`"):
        db_members(engine, {"event": {"name": "cart_abandoned", "where": {"cart_valu": {"gte": 5}}}})
    with pytest.raises(RuleError, match="`gt` does not apply to `category`"):
        db_members(engine, {"event": {"name": "cart_abandoned", "where": {"category": {"gt": 5}}}})
    with pytest.raises(RuleError, match="is not true or false"):
        db_members(engine, {"event": {"name": "cart_abandoned", "where": {"gift": {"eq": "yes"}}}})
    with pytest.raises(ValidationError, match="`max_count: 1` is below `min_count: 3`"):
        RULE.validate_python({"event": {"name": "cart_abandoned", "min_count": 3, "max_count": 1}})
    with pytest.raises(ValidationError, match="write `max_count: 0`"):
        RULE.validate_python({"event": {"name": "cart_abandoned", "min_count": 0}})


CAMPAIGN_YAML = """\
name: {name}
message: welcome/hello
offer: {{code: A, discount_percent: 5, url: 'https://x.example'}}
audience:
  all:
    - field: country
      eq: FR
    - event:
        name: {event}
        where:
          {prop}: {{gte: 5}}
        min_count: {low}
        max_count: {high}
"""


def _validate(tmp_path: Path, events_file: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RELANCE_EVENTS_FILE": str(events_file),
        "RELANCE_MODELS_DIR": str(tmp_path / "m"),
        "RELANCE_SEGMENTS_FILE": str(tmp_path / "segments.yaml"),
        "RELANCE_DATABASE_URL": "sqlite://",
    }
    relance = str(Path(sys.executable).parent / "relance")
    return subprocess.run([relance, "validate", *map(str, files)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_relance_validate_names_the_line_of_a_wrong_event_rule(tmp_path, events_file):
    segments = "segments:\n  viewers:\n    rule:\n      event: {name: page_viewd, within_days: 7}\n"
    (tmp_path / "segments.yaml").write_text(segments, encoding="utf-8")
    files = []
    for name, event, prop, low, high in (
        ("good", "cart_abandoned", "cart_value", 1, 3),
        ("typo", "cart_abandonned", "cart_value", 1, 3),
        ("prop", "cart_abandoned", "cart_valeu", 1, 3),
        ("counts", "cart_abandoned", "items", 3, 1),
        ("text-op", "cart_abandoned", "category", 1, 2),
    ):
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(CAMPAIGN_YAML.format(name=name, event=event, prop=prop, low=low, high=high))
    result = _validate(tmp_path, events_file, *files)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    for line in (
        "segments.yaml:4:21: `name: page_viewd` is not a known event type; did you mean `page_viewed`?",
        "typo.yaml:9:15: `name: cart_abandonned` is not a known event type; did you mean `cart_abandoned`?",
        "prop.yaml:11:11: `cart_valeu` is not a property of event `cart_abandoned`; did you mean",
        "counts.yaml:9:9: `max_count: 1` is below `min_count: 3`",
        "text-op.yaml:11:22: `gte` does not apply to `category` (a string); use eq, ne, in, not_in",
    ):
        assert line in out, out
    assert "good.yaml" not in out
    assert "5 campaign file(s) checked: 5 error(s)" in out


def test_a_journey_branch_rule_with_an_event(base):
    """`branch: {if: {audience: {event: ...}}}` goes through journeys.conditions.rule_test, same SQL."""
    from journeys.conditions import rule_test

    engine, frame, ids = base
    event = {"name": "cart_abandoned", "within_days": 20, "min_count": 2, "max_count": 3}
    entries = select(CUSTOMER.c.id.label("customer_id")).subquery("entries")
    with engine.connect() as c:
        cond = rule_test(RULE.validate_python({"event": event}), NOW, c, entry=entries)
        got = set(c.execute(select(entries.c.customer_id).where(cond)).scalars())
    assert got == expected(frame, ids, event) and got
