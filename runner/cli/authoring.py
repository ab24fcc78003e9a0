"""Commands for writing specs: `exprun new`, `exprun validate`, `exprun schema`."""

from __future__ import annotations

import json
import sys

import click

from runner.cli.starter import BROKER_TYPES, write_starter
from runner.errors import EXIT_BAD_INPUT, SpecError
from runner.spec.loader import load_spec
from schemas.json_schema import experiment_schema


@click.command()
@click.argument("name")
@click.option(
    "--broker",
    "brokers",
    multiple=True,
    type=click.Choice(BROKER_TYPES),
    help="broker type to include (repeatable)  [default: kafka and nats]",
)
def new(name: str, brokers: tuple[str, ...]) -> None:
    """Write NAME.yaml: a commented starter spec that runs on embedded brokers.

    Two variants, two scenarios and two targets, ready to edit. Never overwrites a file.
    """
    path = write_starter(name, brokers or BROKER_TYPES)
    click.echo(f"wrote {path}; run it with: exprun {path}")


@click.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(specs: tuple[str, ...]) -> None:
    """Check SPECS; print one `FILE:LINE:COL: field: message` line per problem.

    Exits 0 when every spec is valid, 2 otherwise.
    """
    failed = False
    for path in specs:
        try:
            load_spec(path)
        except SpecError as error:
            failed = True
            for issue in error.issues:
                click.echo(str(issue), err=True)
        else:
            click.echo(f"{path}: ok")
    if failed:
        sys.exit(EXIT_BAD_INPUT)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors and linters)."""
    click.echo(json.dumps(experiment_schema(), indent=2))
