"""The `relance` Typer application; command modules attach their commands to it."""

import typer

app = typer.Typer(
    name="relance",
    help="relance: declarative multichannel campaigns (e-mail, SMS, push) that learn from responses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
