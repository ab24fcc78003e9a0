"""The `exprun` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from runner.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    ExprunError,
    SpecError,
)
from runner.plan import Plan, make_plan, render_plan
from runner.spec_loader import load_spec
from schemas.json_schema import experiment_schema

EXIT_CODES_HELP = """\b
Exit codes:
  0    all trials ok (and targets met under --check-targets)
  1    finished with failed trials (or unmet targets under --check-targets)
  2    bad input: invalid spec, unknown option value, missing file
  3    broker or infrastructure failure
  130  interrupted
"""


class _SpecShorthand(click.Group):
    """`exprun SPEC.yaml ...` means `exprun run SPEC.yaml ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SpecShorthand, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="exprun")
def cli() -> None:
    """Run declarative message-broker experiments and compare variants with statistics.

    `exprun SPEC.yaml` is short for `exprun run SPEC.yaml`.
    """


def _filters(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--broker", "brokers", multiple=True, help="only this broker (repeatable)"),
        click.option("--variant", "variants", multiple=True, help="only this variant (repeatable)"),
        click.option(
            "--scenario", "scenarios", multiple=True, help="only this scenario (repeatable)"
        ),
        click.option(
            "--repetitions",
            type=click.IntRange(min=1),
            default=None,
            help="measured trials per cell, instead of the spec's",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _plan(spec_path: str, **filters: Any) -> Plan:
    loaded = load_spec(spec_path)
    return make_plan(loaded.spec, loaded.cells, **filters)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="print the plan and its estimate; run nothing")
@_filters
def run(spec: str, dry_run: bool, **filters: Any) -> None:
    """Run every trial of SPEC's matrix and write the reports."""
    plan = _plan(spec, **filters)
    click.echo(render_plan(plan))
    if dry_run:
        return
    raise ExprunError("running trials is not available yet: this build can validate and plan")


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("spec", type=click.Path(dir_okay=False))
@_filters
def plan(spec: str, **filters: Any) -> None:
    """Print the expanded matrix of SPEC and an estimate of its run time (runs nothing)."""
    click.echo(render_plan(_plan(spec, **filters)))


@cli.command()
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


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors and linters)."""
    click.echo(json.dumps(experiment_schema(), indent=2))


def main() -> None:
    """Console entry point: one readable message and a documented exit code on failure."""
    try:
        cli.main(standalone_mode=False)
    except ExprunError as error:
        click.echo(f"exprun: {error}" if not isinstance(error, SpecError) else str(error), err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("exprun: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_BAD_INPUT if error.exit_code == 2 else error.exit_code)
    except KeyboardInterrupt:
        click.echo("exprun: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
