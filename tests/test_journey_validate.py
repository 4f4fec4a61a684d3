"""`relance validate` on journeys: each graph check at its file:line, step errors, customers in flight."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert

from core.models import Customer, JourneyEntry
from core.spec import Campaign
from core.spec_loader import SpecError, load_campaign, load_located
from journeys.graph import check_graph, longest_path
from relance.cli.validation import validate_files
from tests.readme_commands import RELANCE, block_after, user_env

REPO = Path(__file__).resolve().parent.parent
T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

OFFER = "offer: {code: REVIENS15, discount_percent: 15, price: 29.9, url: 'https://maison.example/r'}\n"
GOOD = (
    "name: panier\n"
    + OFFER
    + """\
<head>steps:
  - name: offer-email
    send: {message: winback/offer-15, channels: {order: [email]}}
  - name: three-days
    wait: {days: 3}
  - name: opened
    branch:
      if: {step: offer-email, response: opened}
      then: better-offer
      else: sms-reminder
  - name: sms-reminder
    send: {message: winback/offer-15, channels: {order: [sms]}}
    next: done
  - name: better-offer
    send: {message: winback/offer-20, channels: {order: [email]}}
  - name: done
    exit: completed
"""
)


def journey(head: str = "") -> str:
    """The good journey, with ``head`` lines before `steps:`."""
    return GOOD.replace("<head>", head)


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def pos(text: str, line_with: str, token: str | None = None) -> tuple[int, int]:
    """1-based (line, column) of ``token`` on the first line containing ``line_with``."""
    for number, line in enumerate(text.splitlines(), 1):
        if line_with in line:
            return number, line.index(token or line_with) + 1
    raise AssertionError(line_with)


def found(problems) -> list[tuple[int | None, int | None, str, str]]:
    return [(p.line, p.column, p.severity, p.message) for p in problems]


@pytest.fixture
def check(settings, tmp_path):
    """Validate a journey text (repository templates and segments; no database file)."""

    def run(text: str) -> list[tuple[int | None, int | None, str, str]]:
        path = tmp_path / "journey.yaml"
        path.write_text(text, encoding="utf-8")
        return found(validate_files([path]))

    return run


def readme_journey() -> str:
    return "\n".join(block_after(REPO / "campaigns" / "README.md", "### A complete journey")) + "\n"


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`relance validate` as a user runs it in tmp_path, with the repository's templates and segments."""
    env = user_env(tmp_path)
    env.update(
        RELANCE_TEMPLATES_DIR=str(REPO / "templates"),
        RELANCE_SEGMENTS_FILE=str(REPO / "audiences" / "segments.yaml"),
        RELANCE_MODELS_DIR=str(tmp_path / "models"),
        RELANCE_DATABASE_URL=f"sqlite:///{tmp_path / 'relance.db'}",
    )
    return subprocess.run(
        [RELANCE, "validate", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------
# Good journeys
# --------------------------------------------------------------------------


def test_the_readme_journey_and_the_good_one_pass(check):
    assert check(readme_journey()) == []
    assert check(journey()) == []


def test_validate_command_passes_a_good_journey_and_creates_no_database(tmp_path):
    (tmp_path / "offre.yaml").write_text(readme_journey(), encoding="utf-8")
    done = cli(tmp_path, "offre.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 campaign file(s) checked: 0 error(s), 0 warning(s)" in done.stdout
    assert not (tmp_path / "relance.db").exists()  # validate reads a database, never creates one


def test_every_yaml_block_of_the_journeys_section_is_yaml():
    readme = REPO / "campaigns" / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Journeys: follow-ups over days")
    blocks = sum(1 for line in lines[start:] if line.startswith("```yaml"))
    assert blocks >= 6  # the journey, send, wait, branch, split, exit
    for i in range(blocks):
        block = block_after(readme, "## Journeys: follow-ups over days", i)
        if block and block[0].startswith(("  - name", "name", "#")):
            assert yaml.safe_load("\n".join(block)) is not None


# --------------------------------------------------------------------------
# Graph checks: subprocess (as a marketer reads them)
# --------------------------------------------------------------------------


def test_an_unknown_target_is_named_with_the_closest_step(tmp_path):
    text = edit(journey(), "then: better-offer", "then: better-ofer")
    (tmp_path / "j.yaml").write_text(text, encoding="utf-8")
    done = cli(tmp_path, "j.yaml")
    line, col = pos(text, "then: better-ofer", "better-ofer")
    expected = f"j.yaml:{line}:{col}: `then: better-ofer` is not a step of this journey; did you mean"
    assert done.returncode == 1 and f"{expected} `better-offer`?" in done.stdout, done.stdout
    assert "1 campaign file(s) checked: 1 error(s), 0 warning(s)" in done.stdout


def test_a_loop_without_a_wait_points_at_the_step_closing_it(tmp_path):
    text = edit(journey(), "    next: done\n", "    next: opened\n")
    (tmp_path / "j.yaml").write_text(text, encoding="utf-8")
    done = cli(tmp_path, "j.yaml")
    line, col = pos(text, "next: opened", "opened")
    out = " ".join(done.stdout.split())
    assert done.returncode == 1
    assert (
        f"j.yaml:{line}:{col}: the steps `opened` → `sms-reminder` → `opened` go round without a `wait:` "
        "step: a customer would loop within one tick" in out
    ), out
    assert "1 error(s), 0 warning(s)" in out


# --------------------------------------------------------------------------
# Graph checks: functions
# --------------------------------------------------------------------------


def test_a_step_never_reached(check):
    text = edit(journey(), "else: sms-reminder", "else: done")
    line, col = pos(text, "name: sms-reminder", "sms-reminder")
    assert check(text) == [
        (line, col, "error", "step `sms-reminder` is never reached: no step leads to it (the journey starts "
         "at `offer-email`); name it in a `next:`, `then:` or `else:`, or remove it"),
    ]  # fmt: skip


def test_a_typo_does_not_also_make_the_steps_after_it_unreachable(check):
    text = edit(journey(), "else: sms-reminder", "else: sms-remider")
    (message,) = [m for *_, m in check(text)]
    assert message.endswith("did you mean `sms-reminder`?")


def test_a_loop_with_no_way_out_points_at_its_branch(check):
    text = edit(journey(), "then: better-offer", "then: three-days")
    text = edit(text, "else: sms-reminder", "else: offer-email")
    text = edit(
        text, "  - name: sms-reminder", "  - name: later\n    wait: {days: 1}\n  - name: sms-reminder"
    )
    text = edit(text, "    next: done\n", "")
    problems = check(text)
    line, col = pos(text, "    branch:", "branch")
    assert (line, col, "error") == problems[-1][:3], problems
    assert problems[-1][3].startswith(
        "no way out of the steps `offer-email`, `three-days`, `opened`: they lead only to each other"
    )
    # the steps after the loop are unreachable, and said so, each at its name
    assert [p[3].split(":")[0] for p in problems[:-1]] == [
        "step `later` is never reached",
        "step `sms-reminder` is never reached",
        "step `better-offer` is never reached",
        "step `done` is never reached",
    ]


def test_a_branch_tests_a_send_step_every_path_goes_through(check):
    wait = edit(journey(), "if: {step: offer-email", "if: {step: three-days")
    line, col = pos(wait, "if: {step: three-days", "three-days")
    assert check(wait) == [
        (line, col, "error", "`step: three-days` is a wait step: a branch tests the response to a `send` "
         "step; write one of: offer-email, sms-reminder, better-offer"),
    ]  # fmt: skip
    typo = edit(journey(), "if: {step: offer-email", "if: {step: offer-emial")
    assert check(typo)[0][3].endswith("is not a step of this journey; did you mean `offer-email`?")
    split = edit(
        journey(),
        "steps:\n",
        "steps:\n  - name: ab\n    split:\n      - {percent: 50, next: offer-email}\n"
        "      - {percent: 50, next: three-days}\n",
    )
    line, col = pos(split, "if: {step: offer-email", "offer-email")
    assert check(split) == [
        (line, col, "error", "`step: offer-email`: some customers reach `opened` without passing "
         "`offer-email`, so there is no response of theirs to test; test a send step every path to this "
         "branch goes through"),
    ]  # fmt: skip


def test_a_wait_longer_than_the_reentry_period(check):
    text = journey(head="reentry: {every_days: 2}\n")
    line, col = pos(text, "wait: {days: 3}", "wait")
    assert check(text) == [
        (line, col, "warning", "this wait can last 3 days, longer than `reentry: {every_days: 2}`: a "
         "customer still in the journey does not enter it again, so customers waiting here re-enter less "
         "often than every 2 days; wait less or write `every_days: 3`"),
    ]  # fmt: skip
    assert check(journey(head="reentry: {every_days: 3}\n")) == []


def test_a_conversion_window_shorter_than_the_journey(check):
    text = journey(head="conversion: {window_days: 2}\n")
    line, col = pos(text, "window_days: 2", "2")
    assert check(text) == [
        (line, col, "warning", "the journey can last 3 days but `conversion: {window_days: 2}` counts "
         "purchases for 2 days from entry: purchases after its later steps will not count; write "
         "`window_days: 3`"),
    ]  # fmt: skip
    # not written: the default (7 days) is named at `steps:`
    long = edit(journey(), "wait: {days: 3}", "wait: {days: 8, time: '10:00'}")
    (problem,) = check(long)
    assert problem[:3] == (*pos(long, "steps:"), "warning")
    assert "can last 9 days but `conversion: {window_days: 7}`" in problem[3]


def test_a_send_step_whose_message_misses_a_channel_of_its_strategy(check):
    own = edit(journey(), "message: winback/offer-15, channels: {order: [sms]}",
               "message: flash/sms-sale, channels: {order: [email, sms]}")  # fmt: skip
    line, col = pos(own, "flash/sms-sale, channels", "[email, sms]")
    assert check(own) == [
        (line, col, "error", "step `sms-reminder` may send by email (its `channels: order:`) but "
         "`flash/sms-sale` has no email rendering (it has sms, push); write `channels: {order: [sms]}` in "
         "the step, or add the channel to the template"),
    ]  # fmt: skip
    sms = "message: winback/offer-15, channels: {order: [sms]}"
    default = edit(journey(), sms, "message: flash/sms-sale")
    line, col = pos(default, "message: flash/sms-sale", "flash/sms-sale")
    (problem,) = check(default)
    assert problem[:3] == (line, col, "error")
    assert "(the default order [email, sms, push]) but `flash/sms-sale` has no email rendering" in problem[3]


def test_send_steps_render_with_the_merged_offer(check):
    """journey offer + step offer + variant offer: a field missing from all three is named."""
    text = edit(journey(), OFFER, "offer: {code: REVIENS15, discount_percent: 15, price: 29.9}\n")
    problems = check(text)
    assert problems and all("`offer.url` is not defined" in m for *_, m in problems)
    fixed = edit(
        text,
        "send: {message: winback/offer-20, channels: {order: [email]}}",
        "send:\n      message: winback/offer-20\n      channels: {order: [email]}\n"
        "      offer: {url: 'https://maison.example/b'}\n"
        "      variants: [{name: a}, {name: b, offer: {code: MIEUX}}]",
    )
    assert len(check(fixed)) == len(problems) - 1  # winback/offer-20 now has its url


def test_branch_rules_and_exit_when_segments_are_checked(check):
    text = edit(
        journey(head="exit_when: {left_segment: lapsed_buyer}\n"),
        "if: {step: offer-email, response: opened}",
        "if: {audience: {feature: recency_day, gte: 90}}",
    )
    seg_line, seg_col = pos(text, "left_segment: lapsed_buyer", "lapsed_buyer")
    rule_line, rule_col = pos(text, "feature: recency_day", "recency_day")
    assert check(text) == [
        (rule_line, rule_col, "error", "`feature: recency_day` is not a known feature; did you mean "
         "`recency_days`?"),
        (seg_line, seg_col, "error", "unknown segment `lapsed_buyer`; did you mean `lapsed_buyers`?"),
    ]  # fmt: skip


def test_graph_checks_are_pure_and_find_nothing_in_a_campaign():
    campaign = load_campaign(REPO / "campaigns" / "winback.yaml")
    assert check_graph(campaign) == []
    good = Campaign.model_validate(yaml.safe_load(journey()))
    assert check_graph(good) == []


def test_longest_path_follows_the_longest_way_and_cuts_loops():
    good = Campaign.model_validate(yaml.safe_load(journey()))
    assert longest_path(good) == timedelta(days=3)
    text = edit(journey(), "    next: done\n", "    next: again\n")
    text = edit(text, "  - name: better-offer", "  - name: again\n    wait: {days: 2, time: '10:00'}\n"
                "    next: opened\n  - name: better-offer")  # fmt: skip
    looped = Campaign.model_validate(yaml.safe_load(text))
    assert longest_path(looped) == timedelta(days=3 + 3)  # 3 days, then 2 days and up to a day, once


# --------------------------------------------------------------------------
# Step errors read like rule errors (core.spec_loader)
# --------------------------------------------------------------------------


def load_problems(tmp_path: Path, text: str) -> list[tuple[int | None, int | None, str]]:
    path = tmp_path / "j.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as exc:
        load_located(path, Campaign)
    return [(p.line, p.column, p.message) for p in exc.value.problems]


SHAPE = "a step has a `name:` and exactly one of the keys send, wait, branch, split, exit"


def test_a_step_with_two_actions_or_none(tmp_path):
    two = edit(journey(), "    wait: {days: 3}\n", "    wait: {days: 3}\n    exit: done\n")
    line, col = pos(two, "name: three-days", "name")
    assert load_problems(tmp_path, two) == [
        (line, col, f"step `three-days` has `wait:` and `exit:`: {SHAPE}; give `exit:` a step of its own")
    ]
    none = edit(journey(), "    wait: {days: 3}\n", "    next: opened\n")
    assert load_problems(tmp_path, none) == [(line, col, f"step `three-days` does nothing: {SHAPE}")]
    typo = edit(journey(), "    wait: {days: 3}\n", "    wiat: {days: 3}\n")
    line, col = pos(typo, "wiat:")
    assert load_problems(tmp_path, typo) == [
        (line, col, f"`wiat` is not a kind of step; did you mean `wait`? ({SHAPE})")
    ]


def test_errors_inside_steps_point_at_their_key_with_did_you_mean(tmp_path):
    text = edit(journey(), "wait: {days: 3}", "wait: {dayz: 3}")
    text = edit(text, "if: {step: offer-email, response: opened}", "if: {step: offer-email, respons: opened}")
    text = edit(text, "      else: sms-reminder\n", "      els: sms-reminder\n")
    text = edit(text, "exit: completed", "exit: completed\n    nxt: x")
    assert load_problems(tmp_path, text) == [
        (*pos(text, "dayz"), "unknown key `dayz` in steps[1].wait; did you mean `days`?"),
        (*pos(text, "    branch:", "branch"), "steps[2].branch needs `else:` (The step otherwise); add it"),
        (*pos(text, "respons"), "unknown key `respons` in steps[2].branch.if; did you mean `response`?"),
        (*pos(text, "els: sms", "els"), "unknown key `els` in steps[2].branch; did you mean `else`?"),
        (*pos(text, "nxt"), "unknown key `nxt` in steps[5]; write one of: name, exit"),
    ]


def test_a_rule_error_inside_a_branch_is_at_the_rule(tmp_path):
    text = edit(journey(), "if: {step: offer-email, response: opened}", "if: {audience: {featur: x}}")
    assert load_problems(tmp_path, text) == [
        (*pos(text, "featur:"), "`featur` is not a kind of rule; did you mean `feature`?")
    ]


# --------------------------------------------------------------------------
# Customers in flight (SQLite and PostgreSQL)
# --------------------------------------------------------------------------


def _entries(engine, rows: list[tuple[str, str, str]]) -> None:
    """(journey, step, status) per customer, each customer new."""
    with engine.begin() as conn:
        for i, (name, step, status) in enumerate(rows):
            cid = conn.execute(
                insert(Customer.__table__)
                .values(external_id=f"c{i}", email=f"c{i}@x.test", created_at=T, updated_at=T)
                .returning(Customer.__table__.c.id)
            ).scalar_one()
            conn.execute(
                insert(JourneyEntry.__table__).values(
                    journey=name, customer_id=cid, entry_key=f"{name}:2026-11-23", step=step, status=status,
                    due_at=T + timedelta(days=1) if status == "active" else None, since=T, moves=1,
                    in_control=status == "control", entered_at=T, updated_at=T,
                )
            )  # fmt: skip


def test_customers_on_a_removed_step_are_told_at_steps(check, engine):
    _entries(
        engine,
        [
            ("panier", "old-step", "active"),
            ("panier", "old-step", "active"),
            ("panier", "three-days", "active"),
            ("panier", "gone", "completed"),  # left already: not in flight
            ("panier", "offer-email", "control"),  # control: never moves
            ("other", "old-step", "active"),  # another journey
        ],
    )
    text = journey()
    line, col = pos(text, "steps:")
    assert check(text) == [
        (line, col, "warning", "2 customers are on step `old-step`, which this file no longer has: they "
         "will leave the journey (step removed: old-step) when their step falls due"),
        (line, col, "warning", "in flight now: 3 customer(s) (old-step 2, three-days 1); the others stay "
         "on their steps by name"),
    ]  # fmt: skip


def test_a_step_only_customers_in_flight_reach_is_a_warning(check, engine):
    _entries(engine, [("panier", "sms-reminder", "active")])
    text = edit(journey(), "else: sms-reminder", "else: done")
    line, col = pos(text, "name: sms-reminder", "sms-reminder")
    assert check(text) == [
        (line, col, "warning", "step `sms-reminder` is reached only by customers already in the journey, "
         "not by new ones (the journey starts at `offer-email`); remove it once they have passed"),
    ]  # fmt: skip


def test_nobody_in_flight_and_an_unmigrated_database_say_nothing(check, settings, tmp_path):
    import sqlite3

    path = Path(settings.database_url.removeprefix("sqlite:///"))
    sqlite3.connect(path).close()  # an empty file: no journey_entry table
    assert check(journey()) == []


def test_the_editor_schema_accepts_the_readme_journey_and_refuses_a_step_typo(tmp_path):
    """campaigns/schema.json (what editors check as you type) agrees with the loader on journeys."""
    import json

    import jsonschema

    from core.yaml_positions import load_yaml

    validator = jsonschema.Draft7Validator(json.loads((REPO / "campaigns" / "schema.json").read_text()))
    path = tmp_path / "offre.yaml"
    path.write_text(readme_journey(), encoding="utf-8")
    data, _ = load_yaml(path)
    data = json.loads(json.dumps(data, default=str))  # times as texts, as an editor reads them
    assert list(validator.iter_errors(data)) == []
    data["steps"][1]["wiat"] = data["steps"][1].pop("wait")
    assert list(validator.iter_errors(data)) != []
