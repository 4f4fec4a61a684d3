"""The campaign language: YAML dialect, positions, schema, segments book."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest

from audiences.rules import RuleContext, RuleError, compile_rule
from audiences.segments import SegmentBook, SegmentError, SegmentFileError
from core.spec import Campaign, FeatureRule, SegmentRule
from core.spec_loader import SpecError, load_campaign, load_yaml, position, schema_text

REPO = Path(__file__).resolve().parent.parent
BROKEN = REPO / "tests" / "data" / "broken_campaigns"


def test_yaml_dialect_has_no_yaml11_traps(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: NO\nb: 19:30\nc: 07500\nd: yes\ne: true\nf: 12\ng: 2.5\nh: 2026-01-31\n")
    data, _ = load_yaml(f)
    assert data == {
        "a": "NO", "b": "19:30", "c": "07500", "d": "yes", "e": True, "f": 12, "g": 2.5,
        "h": dt.date(2026, 1, 31),
    }  # fmt: skip


def test_positions_of_keys_and_values(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\naudience:\n  all:\n    - feature: recency_days\n      gte: 90\n")
    _, marks = load_yaml(f)
    assert position(marks, ("audience", "all", 0, "feature")) == (4, 16)
    assert position(marks, ("audience", "all", 0, "gte"), key=True) == (5, 7)
    assert position(marks, ("audience", "all", 0, "missing")) == (4, 7)  # nearest parent


def test_unquoted_times_are_times_not_base_60(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: c\nmessage: m/x\nsending_window:\n  start: 9:30\n  end: 19:30\n")
    window = load_campaign(f).sending_window
    assert (window.start, window.end) == (dt.time(9, 30), dt.time(19, 30))


def test_examples_load_with_their_features():
    winback = load_campaign(REPO / "campaigns" / "winback.yaml")
    assert winback.control_group.percent == 10
    assert [(v.name, v.message) for v in winback.effective_variants()] == [
        ("offer-15", "winback/offer-15"),
        ("offer-20", "winback/offer-20"),
    ]
    assert winback.schedule.cron == "0 10 * * 2"
    flash = load_campaign(REPO / "campaigns" / "flash-sale.yaml")
    assert flash.channels.order == ["sms", "push"] and flash.schedule.at.year == 2027
    welcome = load_campaign(REPO / "campaigns" / "welcome.yaml")
    assert welcome.effective_variants()[0].message == "welcome/hello"


def test_load_campaign_raises_spec_error_with_positions():
    with pytest.raises(SpecError) as err:
        load_campaign(BROKEN / "unknown_key.yaml")
    (problem,) = err.value.problems
    assert (problem.line, problem.column) == (4, 1)
    assert str(err.value).endswith(
        "unknown_key.yaml:4:1: unknown key `sending_windw` in the campaign; did you mean `sending_window`?"
    )


def test_a_rule_needs_an_operator():
    with pytest.raises(ValueError, match="give an operator"):
        Campaign.model_validate({"name": "x", "message": "m", "audience": {"field": "country"}})


def test_schema_json_is_up_to_date():
    assert (REPO / "campaigns" / "schema.json").read_text(encoding="utf-8") == schema_text(), (
        "campaigns/schema.json is stale: run `relance schema`"
    )


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.isoformat() if isinstance(value, dt.date) else value


def test_schema_accepts_the_examples_and_refuses_a_typo():
    validator = jsonschema.Draft7Validator(json.loads(schema_text()))
    for path in sorted((REPO / "campaigns").glob("*.yaml")):
        data, _ = load_yaml(path)
        assert list(validator.iter_errors(_plain(data))) == [], path.name
        assert path.read_text().startswith("# yaml-language-server: $schema=schema.json")
    data, _ = load_yaml(BROKEN / "unknown_key.yaml")
    assert "'sending_windw' was unexpected" in next(validator.iter_errors(_plain(data))).message


def test_segment_book_of_the_repository_builds_on_other_segments():
    book = SegmentBook.load(REPO / "audiences" / "segments.yaml", strict=True)
    assert {"lapsed_buyers", "buyers", "big_spenders", "metropole"} <= set(book.names())
    assert book.problems == []
    expanded = book.expand(SegmentRule(segment="big_spenders"))
    assert "segment" not in json.dumps(expanded.model_dump(by_alias=True))
    with pytest.raises(SegmentError, match="did you mean `lapsed_buyers`"):
        book.get("lapsed_buyer")


def test_segment_cycles_are_named_with_their_position():
    path = BROKEN / "segments" / "cyclic.yaml"
    with pytest.raises(SegmentFileError) as err:
        SegmentBook.load(path, strict=True)
    (problem,) = err.value.problems
    assert (problem.line, problem.column) == (10, 20)
    assert "a -> b -> a" in problem.message
    book = SegmentBook.load(path)
    assert isinstance(book.get("ok"), FeatureRule)
    for name in ("a", "b", "c"):
        with pytest.raises(SegmentError, match="a -> b -> a"):
            book.get(name)


def test_the_rule_compiler_expands_segments_through_the_book():
    book = SegmentBook.load(REPO / "audiences" / "segments.yaml")
    ctx = RuleContext(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), segments=book)
    sql = str(compile_rule(SegmentRule(segment="lapsed_buyers"), ctx))
    assert "frequency" in sql and "last_order_at" in sql
    cyclic = SegmentBook.load(BROKEN / "segments" / "cyclic.yaml")
    with pytest.raises(RuleError, match="a -> b -> a"):
        compile_rule(SegmentRule(segment="c"), RuleContext(ctx.now, segments=cyclic))
