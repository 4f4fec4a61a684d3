"""`relance report` as a marketer reads it: the stored funnel, and a terminal layout that fits its width.

The command runs through typer's CliRunner with COLUMNS set, as in a terminal of
that width or a pipe; the printed rich tables are parsed back into cells so the
assertions are about what a person can read, not about the code that printed it.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from core.models import CampaignRun
from reporting.report import build_report
from reporting.report_render import euros, rates, uplift_row
from tests.test_report import make_ledger

FIGURE_LABELS = [
    "messages",
    "held out",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "converted",
    "revenue",
    "bounced hard",
    "complained",
    "unsubscribed",
    "failed",
    "unknown",
    "skipped",
]
UPLIFT_LABELS = ["treated", "control", "absolute uplift", "relative uplift", "revenue / customer", "p-value"]


def run_report(campaign: str, width: int, monkeypatch, tmp_path) -> str:
    """`relance report CAMPAIGN` in a terminal ``width`` columns wide (or a pipe with COLUMNS set)."""
    from relance.cli import app

    monkeypatch.chdir(tmp_path)  # a short relative --out, so the printed paths fit the width too
    result = CliRunner().invoke(app, ["report", campaign, "--out", "r"], env={"COLUMNS": str(width)})
    assert result.exit_code in (0, 3), result.output  # 3: an alert threshold was crossed
    return result.output


def parse_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Rich tables in ``text`` as (title, header cells, rows); a wrapped row's lines are joined."""
    lines = text.splitlines()
    tables = []
    for i, line in enumerate(lines):
        if not line.startswith(("┏", "┌")):
            continue
        title = lines[i - 1].strip() if i else ""
        headers: list[str] = []
        rows: list[list[str]] = []
        for body in lines[i + 1 :]:
            if body.startswith(("└", "┗")):
                break
            cells = [c.strip() for c in re.split(r"[│┃]", body)[1:-1]]
            if body.startswith("┃"):
                headers = (
                    cells
                    if not headers
                    else [f"{h} {c}".strip() for h, c in zip(headers, cells, strict=True)]
                )
            elif body.startswith("│"):
                if rows and cells[0] == "":  # the same row, wrapped onto another line
                    rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
                else:
                    rows.append(cells)
        tables.append((title, headers, rows))
    return tables


def cells_by_row(text: str, title: str) -> dict[str, dict[str, str]]:
    """Every cell of the tables titled ``title`` (or its continuations): row label -> header -> cell."""
    out: dict[str, dict[str, str]] = {}
    for name, headers, rows in parse_tables(text):
        if name == title or name.startswith(f"{title} ("):
            for row in rows:
                keys = headers[1:] if headers else [""] * (len(row) - 1)
                out.setdefault(row[0], {}).update(zip(keys, row[1:], strict=True))
    return out


def by_slice(printed: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Slice -> figure -> cell, whichever way the table was laid out (slices or figures as rows)."""
    if not set(printed) <= set(FIGURE_LABELS):
        return printed
    out: dict[str, dict[str, str]] = {}
    for figure, row in printed.items():
        for name, cell in row.items():
            out.setdefault(name, {})[figure] = cell
    return out


def expected_cells(f) -> dict[str, str]:
    values = {
        label: f"{getattr(f, label.replace(' ', '_')):,}" for label in FIGURE_LABELS if label != "revenue"
    }
    return values | {"revenue": euros(f.revenue_cents)}


# ------------------------------------------------------------------ defect 2: the funnel


@pytest.fixture
def planned_run(sqlite_engine):
    """A run recorded the way `relance run` records it: selection and funnel from audiences.plan."""
    from delivery import ledger
    from delivery.runs import select_audience
    from tests.test_plan import CAMP, NOW, _random_base
    from tests.test_selection_support import campaign

    _random_base(sqlite_engine, n=120)
    camp = campaign(**CAMP)
    with sqlite_engine.begin() as conn:
        run_id = ledger.start_run(conn, camp.name, "test:1")
        selection, funnel = select_audience(conn, camp, NOW)
        ledger.record_selection(conn, run_id, camp.name, selection, 50, funnel)
        runs = CampaignRun.__table__
        stored = conn.execute(select(runs.c.funnel).where(runs.c.id == run_id)).scalar_one()
    steps = json.loads(stored)["steps"]
    assert len({s["count"] for s in steps}) > 2, "a funnel that narrows, so zeros would show"
    return camp.name, json.loads(stored)


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_funnel_shows_the_stored_counts(planned_run, settings, monkeypatch, tmp_path, width):
    name, stored = planned_run
    funnel = cells_by_row(run_report(name, width, monkeypatch, tmp_path), "Funnel (plan)")
    for step in stored["steps"]:
        row = funnel[step["step"]]
        assert row["customers"] == f"{step['count']:,}", step
        assert row["removed"] == ("" if step["step"] == "base" else f"-{step['removed']:,}"), step
        assert row["why"] == step["why"], step
    control = funnel["control group"]
    assert control["customers"] == f"{stored['recipients']['customers']:,}"
    assert control["removed"] == f"-{stored['control']['held_out_customers']:,}"


class _FunnelHTML(HTMLParser):
    """The funnel table's cells and the funnel chart's bar labels of the HTML report."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.bars: list[str] = []
        self._in_table = self._in_chart = self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in_table = a.get("id") == "funnel"
        elif tag == "svg":
            self._in_chart = a.get("aria-label") == "Audience funnel"
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "svg":
            self._in_chart = False
        elif tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.rows[-1][-1] += data
        elif self._in_chart:
            self.bars.append(data)


def test_html_funnel_table_and_bars_show_the_stored_counts(planned_run, settings, monkeypatch, tmp_path):
    name, stored = planned_run
    run_report(name, 120, monkeypatch, tmp_path)
    page = _FunnelHTML()
    page.feed((tmp_path / "r" / f"{name}.html").read_text(encoding="utf-8"))
    header, *rows = page.rows
    assert header == ["step", "customers", "removed", "why"]
    table = {r[0]: r[1:] for r in rows}
    for step in stored["steps"]:
        removed = "" if step["step"] == "base" else f"-{step['removed']:,}"
        assert table[step["step"]] == [f"{step['count']:,}", removed, step["why"]]
    # the chart: one bar per step, labelled with the step then drawn with the stored count
    bars = dict(zip(page.bars[0::2], page.bars[1::2], strict=True))
    expected = {s["step"]: f"{s['count']:,}" for s in stored["steps"]}
    assert bars == expected | {"control group": f"{stored['recipients']['customers']:,}"}


# ------------------------------------------------------------------ defect 3: the terminal layout


@pytest.mark.parametrize("width", [80, 120, 200])  # 200: wide enough for one slice a row
def test_terminal_report_fits_its_width_with_nothing_cut(
    sqlite_engine, settings, monkeypatch, tmp_path, width
):
    with sqlite_engine.begin() as conn:
        make_ledger(conn, n=400, seed=1, key="winback:1")
        make_ledger(conn, n=400, seed=2, key="winback:2")
    with sqlite_engine.connect() as conn:
        report = build_report(conn, "winback")
    text = run_report("winback", width, monkeypatch, tmp_path)

    assert "…" not in text
    too_long = [line for line in text.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)

    for title, slices in (
        ("Responses", {"total": report.totals}),
        ("Per variant", report.by_variant),
        ("Per channel", report.by_channel),
        ("Per locale", report.by_locale),
    ):
        printed = by_slice(cells_by_row(text, title))
        assert printed == {label: expected_cells(f) for label, f in slices.items()}, title

    uplifts = {"all variants": report.uplift_total} | report.uplift_by_variant
    printed = cells_by_row(text, "Incrementality vs control group")
    for label in UPLIFT_LABELS:
        assert {col: printed[label][col] for col in uplifts} == {
            col: uplift_row(u)[label] for col, u in uplifts.items()
        }, label
    flat = " ".join(text.split())  # the terminal's line breaks undone: sentences read whole
    for label, u in uplifts.items():
        assert f"{label}: {u.conclusion}" in flat

    money = cells_by_row(text, "Rates and money")
    assert {k: money[k][""] for k in rates(report.totals)} == rates(report.totals)
    runs = cells_by_row(text, "Runs compared")
    assert set(runs) == {"winback:1", "winback:2"}
    for r in report.runs:
        assert runs[r.key]["revenue"] == euros(r.figures.revenue_cents)
        assert runs[r.key]["converted"] == f"{r.figures.converted:,}"


@pytest.mark.parametrize("width", [80, 120])
def test_portfolio_fits_its_width_and_says_each_conclusion_whole(width):
    import io

    from rich.console import Console

    from reporting.portfolio import PortfolioLine, print_portfolio

    lines = [
        PortfolioLine("flash-sale-automne", 3, 120_777, 2_206_123.9, -2_544_321.75, -6_922_000, 1_833_000,
                      "control group too small to conclude (91 customers, 6 conversions; need at least "
                      "100 customers and 5 conversions in each group)"),
        PortfolioLine("winback", 1, 1_816, 20_307.2, 12_923.61, 6_694, 19_154,
                      "the campaign raised conversion significantly (p = 0.00191)"),
    ]  # fmt: skip
    buffer = io.StringIO()
    print_portfolio(lines, Console(file=buffer, width=width))
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    joined = " ".join(text.split())
    for line in lines:
        assert f"{line.campaign}: {line.conclusion}" in joined
