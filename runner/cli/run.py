"""`exprun run` and `exprun plan`: expand a spec into trials and run them (or only show them)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runner.cli.history import store_option
from runner.errors import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_TRIALS_FAILED,
    BadInputError,
    ExprunError,
)
from runner.execution.instances import check_memory, plan_instances, render_instances
from runner.execution.load_hosts import (
    SCHEDULER_VARIABLE,
    HostsUnavailable,
    LoadHosts,
    load_hosts,
)
from runner.execution.plan import Plan, make_plan, plan_warnings, render_placement, render_plan
from runner.execution.run import RunOutcome, execute, new_run, open_for_resume
from runner.redaction import redact
from runner.reporting import markdown_summary, write_reports
from runner.run_folder import RunFolder, RunInfo, default_run_dir, utc_now
from runner.spec.loader import LoadedSpec, load_spec
from schemas.report import Report
from schemas.results import TrialResult
from schemas.spec import ExecutionSettings


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


@click.command(epilog=EXIT_CODES_HELP)
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
@store_option
@click.option("--no-store", is_flag=True, help="do not record the run in a results store")
@click.option("--label", default=None, help="a label for the run in the store (e.g. a PR)")
@click.option(
    "--commit",
    metavar="REV",
    default=None,
    help="the revision of the system under test, when it is not the spec's repository",
)
@click.option("--testbed", default=None, help="the store's name for this machine")
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    help="the Dask scheduler of engine: dask, e.g. tcp://10.0.0.5:8786 (overrides the spec's; "
    f"default ${SCHEDULER_VARIABLE})",
)
@_filters
def run(
    spec: str,
    dry_run: bool,
    out: Path | None,
    resume: Path | None,
    check_targets: bool,
    store: str | None,
    no_store: bool,
    label: str | None,
    commit: str | None,
    testbed: str | None,
    scheduler: str | None,
    **filters: Any,
) -> None:
    """Run every trial of SPEC's matrix and write the run folder and reports."""
    loaded = load_spec(spec)
    if dry_run and resume is None:
        click.echo(_shown(make_plan(loaded.spec, loaded.cells, **filters)))
        return
    if no_store and store is not None:
        raise BadInputError("--store and --no-store: choose one")
    remember = None if no_store else Remember(store, label, commit, testbed)
    _check_scheduler(loaded.spec.execution, scheduler)
    # The scheduler is reached before the run folder exists: a dead one leaves nothing behind.
    embedded = any(broker.embedded for broker in loaded.spec.brokers.values())
    with load_hosts(loaded.spec.execution, scheduler, embedded) as hosts:
        _run(loaded, out, resume, check_targets, filters, hosts, remember)


def _check_scheduler(execution: ExecutionSettings, scheduler: str | None) -> None:
    if scheduler is None:
        return
    if not execution.distributed:
        raise BadInputError(
            f"--scheduler {scheduler}: this spec's execution.engine is local (write engine: dask)"
        )


def _run(
    loaded: LoadedSpec,
    out: Path | None,
    resume: Path | None,
    check_targets: bool,
    filters: dict[str, Any],
    hosts: LoadHosts | None,
    remember: Remember | None = None,
) -> None:
    plan, folder, info, done = _prepare(loaded, out, resume, filters)
    for warning in plan_warnings(plan):
        click.echo(f"exprun: warning: {warning}", err=True)
    click.echo(
        f"{loaded.spec.name}: {len(plan.trials) - len(done)} trials over {len(plan.cells)} "
        f"cells -> {folder.path}",
        err=True,
    )
    try:
        outcome = execute(
            loaded,
            plan,
            folder,
            info,
            done=done,
            announce=lambda m: click.echo(m, err=True),
            hosts=hosts,
        )
    except HostsUnavailable:
        # Too few hosts left mid-run: the trials that finished still get their reports.
        with contextlib.suppress(Exception):
            write_reports(folder.path, loaded.spec.reports)
        raise
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
    if remember is not None and not outcome.interrupted:
        remember.record(report, folder.path)
    _exit_for(outcome, report, len(plan.trials), check_targets)


def _prepare(
    loaded: LoadedSpec, out: Path | None, resume: Path | None, filters: dict[str, Any]
) -> tuple[Plan, RunFolder, RunInfo, list[TrialResult]]:
    """The plan and its run folder: a new one, or the one --resume continues."""
    chosen = {k: list(v) if isinstance(v, tuple) else v for k, v in filters.items() if v}
    if resume is None:
        plan = make_plan(loaded.spec, loaded.cells, **filters)
        check_memory(plan_instances(plan))  # before the run folder exists
        folder, info = new_run(loaded, plan, out or default_run_dir(loaded.spec.name), chosen)
        return plan, folder, info, []
    if chosen or out is not None:
        raise BadInputError("--resume takes the filters and folder of the run it resumes")
    folder, info, done = open_for_resume(loaded, resume)
    plan = make_plan(loaded.spec, loaded.cells, seed=info.seed, **info.filters)
    return plan, folder, info, done


class Remember:
    """Where and how a finished run is recorded in a results store."""

    def __init__(
        self, store: str | None, label: str | None, commit: str | None, testbed: str | None
    ) -> None:
        # runner.history loads SQLAlchemy: not before a run needs it. A store named wrongly
        # is bad input before anything runs; reaching it waits for the run's end.
        from runner.history.location import store_location

        self.location = store_location(store)
        self.label, self.commit, self.testbed = label, commit, testbed

    def record(self, report: Report, run_dir: Path) -> None:
        """Record the run (its folder is already written); a store the user did not name
        that fails is a warning, one they named is an error (exit 3)."""
        from runner.history.record import run_record
        from runner.history.store import StoreError, record_run

        record = run_record(
            report,
            str(run_dir.resolve()),
            label=self.label,
            commit=self.commit,
            testbed=self.testbed,
            recorded_at=utc_now(),
        )
        try:
            added = record_run(self.location, record)
        except StoreError as error:
            if self.location.explicit:
                raise
            click.echo(f"exprun: warning: the run was not recorded: {error}", err=True)
            return
        verb = "recorded in" if added else "already in"
        click.echo(f"{verb} the store {self.location.shown}", err=True)


def _shown(plan: Plan) -> str:
    """The plan's matrix, the broker instances it keeps alive, and the load generators."""
    return "\n\n".join(
        [render_plan(plan), render_instances(plan_instances(plan)), render_placement(plan)]
    )


def _exit_for(outcome: RunOutcome, report: Report, planned: int, check_targets: bool) -> None:
    """Exit 130 when interrupted, 1 for failed trials (or unmet targets when checked)."""
    if outcome.interrupted:
        click.echo(
            f"exprun: interrupted after {len(outcome.results)} of {planned} trials; "
            f"reports cover what finished; continue with --resume {outcome.folder.path}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    unmet = report.targets.total - report.targets.passed
    if outcome.failed:
        click.echo(f"exprun: {outcome.failed} trial(s) failed; see the report", err=True)
    if check_targets and unmet:
        click.echo(f"exprun: {unmet} target score(s) not met (--check-targets)", err=True)
    if outcome.failed or (check_targets and unmet):
        sys.exit(EXIT_TRIALS_FAILED)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("spec", type=click.Path(dir_okay=False))
@_filters
def plan(spec: str, **filters: Any) -> None:
    """Print the expanded matrix of SPEC and an estimate of its run time (runs nothing)."""
    loaded = load_spec(spec)
    click.echo(_shown(make_plan(loaded.spec, loaded.cells, **filters)))
