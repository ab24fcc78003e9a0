"""The `exprun` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from runner.brokers import stop_all_brokers
from runner.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TRIALS_FAILED,
    BadInputError,
    ExprunError,
    SpecError,
)
from runner.plan import Plan, make_plan, render_plan
from runner.process import (
    become_subreaper,
    kill_descendants,
    reap_children,
    stop_multiprocessing_helpers,
)
from runner.redaction import redact
from runner.report_commands import diff_command, report_command
from runner.reporting import markdown_summary, write_reports
from runner.run import execute, new_run, open_for_resume
from runner.run_folder import default_run_dir
from runner.spec_loader import load_spec
from runner.starter import BROKER_TYPES, write_starter
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
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="run folder (default: results/<spec name>/<UTC timestamp>/)",
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="continue this run folder: run only the trials it has not recorded",
)
@click.option("--check-targets", is_flag=True, help="exit 1 when any target of the spec is not met")
@_filters
def run(
    spec: str,
    dry_run: bool,
    out: Path | None,
    resume: Path | None,
    check_targets: bool,
    **filters: Any,
) -> None:
    """Run every trial of SPEC's matrix and write the run folder and reports."""
    loaded = load_spec(spec)
    chosen = {k: list(v) if isinstance(v, tuple) else v for k, v in filters.items() if v}
    if resume is not None:
        if chosen or out is not None:
            raise BadInputError("--resume takes the filters and folder of the run it resumes")
        folder, info, done = open_for_resume(loaded, resume)
        plan = make_plan(loaded.spec, loaded.cells, seed=info.seed, **info.filters)
    else:
        plan = make_plan(loaded.spec, loaded.cells, **filters)
        if dry_run:
            click.echo(render_plan(plan))
            return
        folder, info = new_run(loaded, plan, out or default_run_dir(loaded.spec.name), chosen)
        done = []
    click.echo(
        f"{loaded.spec.name}: {len(plan.trials) - len(done)} trials over {len(plan.cells)} "
        f"cells -> {folder.path}",
        err=True,
    )
    try:
        outcome = execute(
            loaded, plan, folder, info, done=done, announce=lambda m: click.echo(m, err=True)
        )
    except ExprunError as error:
        # A secret may sit in an endpoint or a property that a broker's error repeats.
        error.args = (redact(str(error), loaded.secrets),)
        raise
    try:
        report = write_reports(folder.path, loaded.spec.reports)
    except OSError as error:
        raise ExprunError(f"cannot write the reports in {folder.path}: {error}") from None
    click.echo(markdown_summary(report))
    click.echo(f"run folder: {folder.path}", err=True)
    if outcome.interrupted:
        click.echo(
            f"exprun: interrupted after {len(outcome.results)} of {len(plan.trials)} trials; "
            f"reports cover what finished; continue with --resume {folder.path}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    unmet = report.targets.total - report.targets.passed
    if outcome.failed or (check_targets and unmet):
        if outcome.failed:
            click.echo(f"exprun: {outcome.failed} trial(s) failed; see the report", err=True)
        if check_targets and unmet:
            click.echo(f"exprun: {unmet} target score(s) not met (--check-targets)", err=True)
        sys.exit(EXIT_TRIALS_FAILED)


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


@cli.command()
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


cli.add_command(report_command)
cli.add_command(diff_command)


def _warning_line(message: Warning | str, *args: object, **kwargs: object) -> None:
    click.echo(f"exprun: warning: {message}", err=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """First Ctrl-C or SIGTERM: stop in order (finished trials kept, brokers stopped)."""
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    raise KeyboardInterrupt


def _exit_now(signum: int, frame: FrameType | None) -> None:
    """Second one: exit at once, killing (not stopping) everything we started, and reaping it."""
    os.write(2, b"\nexprun: interrupted again: exiting now\n")
    kill_descendants()
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Console entry point: one readable message and a documented exit code on failure."""
    warnings.showwarning = _warning_line
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # A file-size limit (or a full quota) then fails the write with an error we report,
    # instead of killing exprun with its brokers still to stop.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Orphans of our tree (a NATS publisher whose trial process was killed) come back to us.
    become_subreaper()
    try:
        _run_cli()
    finally:
        # Past this point everything is stopped: a late signal must not turn the exit status
        # into "killed by SIGINT" (Python restores the default handlers while it shuts down).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # No process of ours outlives us, not even as a zombie: stop and wait for each.
        stop_all_brokers()
        stop_multiprocessing_helpers()
        reap_children()


def _run_cli() -> None:
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
