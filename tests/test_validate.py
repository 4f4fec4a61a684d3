"""`relance validate`: each broken campaign gives its precise message at file:line:column."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from relance.cli.app import app
from relance.cli.validation import validate_files

REPO = Path(__file__).resolve().parent.parent
BROKEN = REPO / "tests" / "data" / "broken_campaigns"

# file -> every problem it must give: (line, column, words the message must contain)
CORPUS: dict[str, list[tuple[int | None, int | None, str]]] = {
    "bad_yaml.yaml": [
        (
            3,
            19,
            "not valid YAML: mapping values are not allowed here; put quotes around a text containing `: `",
        )
    ],
    "tabs.yaml": [(4, 1, "indent with spaces, not tabs")],
    "duplicate_key.yaml": [(4, 1, "duplicate key `message` (also on line 2): keep only one")],
    "unknown_key.yaml": [
        (4, 1, "unknown key `sending_windw` in the campaign; did you mean `sending_window`?")
    ],
    "wrong_type.yaml": [
        (4, 11, "`priority: high` is not a whole number; write e.g. 3"),
        (6, 12, "`percent: 10 %` is not a number; write digits only"),
        (8, 10, "`start: 9h` is not a time; write HH:MM, e.g. 09:00"),
    ],
    "unknown_feature.yaml": [
        (6, 14, "`field: contry` is not a known customer field; did you mean `country`?"),
        (8, 16, "`feature: recency_day` is not a known feature; did you mean `recency_days`?"),
    ],
    "unknown_segment.yaml": [
        (6, 16, "unknown segment `lapsed_buyer`; did you mean `lapsed_buyers`?"),
        (7, 16, "unknown segment `vip`; define it under `segments:` in audiences/segments.yaml"),
    ],
    "unknown_template.yaml": [
        (5, 14, "`message: winback/ofer-15` is not a template folder"),
        (5, 14, "did you mean `winback/offer-15`?"),
    ],
    "impossible_window.yaml": [
        (6, 8, "end 09:00 is not after start 20:00: no message could ever be sent"),
        (7, 9, "no sending day: no message could ever be sent; write e.g. [mon, tue, wed, thu, fri]"),
    ],
    "bad_schedule.yaml": [
        (5, 9, "cron `0 25 * * 2` is not valid (bad hour): write 5 fields `minute hour day month weekday`"),
        (6, 13, "`Europe/Pari` is not a known time zone; did you mean `Europe/Paris`?"),
    ],
    "bad_rules.yaml": [
        (8, 7, "one rule has both `field:` and `feature:`: a rule has one of them; put the two rules"),
        (9, 7, "`featur` is not a kind of rule; did you mean `feature`?"),
        (12, 12, "`gte: two` is not valid: write a date (YYYY-MM-DD) or a number"),
        (13, 7, "`lapsed_buyers` is not a rule: a rule is a mapping, e.g. `segment: lapsed_buyers`"),
    ],
    "bad_variants.yaml": [
        (5, 12, "`percent: 95`: must be less than or equal to 90"),
        (8, 13, "`weight: 0`: must be greater than 0"),
        (11, 13, "`strategy: prefered` is not allowed here; did you mean `preferred`?"),
        (12, 18, "`order: fax` is not allowed here; write one of: email, sms, push"),
    ],
}


@pytest.fixture
def at_repo(settings, monkeypatch):
    """Run from the repository so that files show as tests/data/...; settings point at its folders."""
    monkeypatch.chdir(REPO)
    return settings


def _problems(*names: str):
    return validate_files([BROKEN / n for n in names])


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_broken_campaign_gives_its_precise_message(at_repo, name):
    problems = [p for p in _problems(name) if p.severity == "error"]
    assert all(p.file == f"tests/data/broken_campaigns/{name}" for p in problems), problems
    expected = CORPUS[name]
    by_position = {(p.line, p.column): p.message for p in problems}
    assert len(by_position) == len({(line, col) for line, col, _ in expected}), problems
    for line, col, words in expected:
        assert words in by_position.get((line, col), ""), (line, col, words, problems)


def test_the_full_line_reads_file_line_column_message(at_repo):
    (problem,) = _problems("unknown_feature.yaml")[1:]
    assert str(problem) == (
        "tests/data/broken_campaigns/unknown_feature.yaml:8:16: "
        "`feature: recency_day` is not a known feature; did you mean `recency_days`?"
    )


def test_a_missing_offer_field_points_at_the_template_line_and_the_offer(at_repo):
    problems = _problems("missing_variable.yaml")
    assert [(p.file, p.line) for p in problems] == [
        ("templates/winback/offer-15/content.yaml", 12),
        ("templates/winback/offer-15/content.yaml", 33),
    ]
    assert "`offer.price` is not defined" in problems[0].message
    assert problems[0].message.endswith(
        "(add `price:` under `offer:` in tests/data/broken_campaigns/missing_variable.yaml:3)"
    )


def test_a_misspelled_template_variable_is_found_with_its_template_line(at_repo, monkeypatch):
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(BROKEN / "templates"))
    get_settings.cache_clear()
    (problem,) = _problems("template_typo.yaml")
    assert problem.file.endswith("typo/hello/content.yaml") and problem.line == 6
    assert "`frist_name` is not defined (did you mean `first_name`?)" in problem.message
    assert problem.message.endswith("(message of tests/data/broken_campaigns/template_typo.yaml:2:10)")


def test_cyclic_segments_are_reported_once_where_the_cycle_closes(at_repo, monkeypatch):
    monkeypatch.setenv("RELANCE_SEGMENTS_FILE", str(BROKEN / "segments" / "cyclic.yaml"))
    get_settings.cache_clear()
    problems = _problems("uses_cycle.yaml")
    assert [str(p) for p in problems] == [
        "tests/data/broken_campaigns/segments/cyclic.yaml:10:20: segments refer to each other in a cycle: "
        "a -> b -> a; remove one of these `segment:` references",
        "tests/data/broken_campaigns/uses_cycle.yaml:5:12: segment `c` uses `a`: segment `a` is in the cycle "
        "a -> b -> a (tests/data/broken_campaigns/segments/cyclic.yaml:10:20)",
    ]


def test_example_campaigns_validate_clean(at_repo):
    paths = sorted((REPO / "campaigns").glob("*.yaml"))
    assert {p.name for p in paths} >= {"winback.yaml", "welcome.yaml", "flash-sale.yaml"}
    assert validate_files(paths) == []


def test_warnings_for_models_not_trained_yet(at_repo, tmp_path):
    path = tmp_path / "scored.yaml"
    path.write_text(
        "name: scored\nmessage: welcome/hello\noffer: {code: A, discount_percent: 5, url: 'https://x.example'}\n"
        "audience:\n  all:\n    - top: {model: churn, percent: 20}\n    - score: {model: respons, min: 0.5}\n"
        "    - campaign: {name: winbak, event: clicked}\n",
        encoding="utf-8",
    )
    problems = validate_files([path, REPO / "campaigns" / "winback.yaml"])
    assert [(p.severity, p.line, p.column) for p in problems] == [
        ("warning", 6, 20),
        ("warning", 7, 22),
        ("warning", 8, 24),
    ]
    first, second, third = (p.message for p in problems)
    assert "no trained model `churn` yet" in first and "relance train churn" in first
    assert "no model `respons`" in second and "did you mean `response`?" in second
    assert "no campaign named `winbak`" in third and "did you mean `winback`?" in third


def test_trainable_model_names_match_the_learning_module():
    from audiences.learning.models import TRAINERS
    from relance.cli.validation import TRAINABLE_MODELS

    assert set(TRAINABLE_MODELS) == set(TRAINERS)


def test_two_campaigns_with_one_name(at_repo, tmp_path):
    copy = tmp_path / "winback-copy.yaml"
    shutil.copy(REPO / "campaigns" / "winback.yaml", copy)
    problems = validate_files([REPO / "campaigns" / "winback.yaml", copy])
    assert [(p.line, p.column) for p in problems] == [(3, 7)]
    assert (
        "`name: winback` is already the name of the campaign in campaigns/winback.yaml" in problems[0].message
    )


# --------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------


def test_validate_exit_codes(at_repo, tmp_path, monkeypatch):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "campaigns/winback.yaml", "campaigns/flash-sale.yaml"])
    assert ok.exit_code == 0, ok.output
    assert "2 campaign file(s) checked: 0 error(s), 0 warning(s)" in ok.output
    bad = runner.invoke(app, ["validate", "campaigns/welcome.yaml", str(BROKEN / "unknown_feature.yaml")])
    assert bad.exit_code == 1
    assert "unknown_feature.yaml:8:16: `feature: recency_day` is not a known feature" in bad.output
    assert "2 campaign file(s) checked: 2 error(s), 0 warning(s)" in bad.output
    # default: every campaigns/*.yaml of settings.campaigns_dir; --strict makes warnings fail
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "scored.yaml").write_text(
        "name: scored\nmessage: welcome/hello\noffer: {code: A, discount_percent: 5, url: 'https://x.example'}\n"
        "audience: {score: {model: churn, min: 0.5}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(folder))
    get_settings.cache_clear()
    monkeypatch.chdir(tmp_path)  # no prefect.yaml here: no deployment check
    warned = runner.invoke(app, ["validate"])
    assert (
        warned.exit_code == 0
        and "1 error(s)" not in warned.output
        and "warning: no trained model" in warned.output
    )
    assert runner.invoke(app, ["validate", "--strict"]).exit_code == 1
    (folder / "scored.yaml").unlink()
    empty = runner.invoke(app, ["validate"])
    assert empty.exit_code == 1 and "no campaign file" in empty.output


def test_schema_command_writes_and_checks(at_repo, tmp_path):
    runner = CliRunner()
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["schema", "--check", "-o", str(out)]).exit_code == 1
    res = runner.invoke(app, ["schema", "-o", str(out)])
    assert res.exit_code == 0 and out.read_text() == (REPO / "campaigns" / "schema.json").read_text()
    assert runner.invoke(app, ["schema", "--check", "-o", str(out)]).exit_code == 0
