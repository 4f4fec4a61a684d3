"""`relance train && relance models` as the README shows it: no option at all (issue 16, defect 1)."""

from __future__ import annotations

from datetime import UTC, datetime

from typer.testing import CliRunner

from relance.cli import app


def _models_listed(output: str) -> dict[str, str]:
    """model name -> its row in `relance models`' table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] in ("churn", "response", "uplift"):
            rows[cells[1]] = line
    return rows


def test_train_then_models_with_no_option_on_a_base_with_past_campaigns(sqlite_engine, settings) -> None:
    from audiences.learning import synthetic

    synthetic.generate(sqlite_engine, 1500, now=datetime.now(UTC), seed=5)
    runner = CliRunner()
    trained = runner.invoke(app, ["train"], env={"COLUMNS": "250"})
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    assert "Traceback" not in trained.output
    listed = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    rows = _models_listed(listed.output)
    assert set(rows) == {"churn", "response", "uplift"}, listed.output
    assert all("yes" in row for row in rows.values())  # trained, passing and used


def test_train_then_models_with_no_option_on_a_fresh_demo_base(settings, tmp_path, monkeypatch) -> None:
    """Right after `relance demo-data` no campaign has run: churn learns from the orders, response and
    uplift say why they wait, and `relance train && relance models` still goes on to list what exists."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["demo-data", "--customers", "2000"], env={"COLUMNS": "250"})
    assert made.exit_code == 0, made.output
    trained = runner.invoke(app, ["train"], env={"COLUMNS": "250"})
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    out = " ".join(trained.output.split())
    assert "response: not trained" in out and "uplift: not trained" in out
    assert "run more campaigns" in out
    listed = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert set(_models_listed(listed.output)) == {"churn"}, listed.output


def test_train_a_named_model_without_enough_data_still_fails(settings, tmp_path, monkeypatch) -> None:
    """Asked for by name, a model that cannot be trained is an error (exit 2), as before."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["demo-data", "--customers", "200"]).exit_code == 0
    trained = runner.invoke(app, ["train", "uplift"], env={"COLUMNS": "250"})
    assert trained.exit_code == 2, trained.output
    assert "uplift: not trained" in " ".join(trained.output.split())


def test_message_rows_without_until_reads_as_of_now(sqlite_engine, settings) -> None:
    from audiences.learning import dataset, synthetic

    synthetic.generate(sqlite_engine, 300, now=datetime.now(UTC), seed=2, share_per_run=1.0)
    with sqlite_engine.connect() as conn:
        default = dataset.message_rows(conn, window_days=7)
        explicit = dataset.message_rows(conn, window_days=7, until=datetime.now(UTC))
    assert len(default) > 0
    assert default["key"].tolist() == explicit["key"].tolist()
