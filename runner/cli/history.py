"""`exprun history`: the runs a results store remembers, their series and change points, the CI
gate on the newest runs, and the trend page; `history import | runs | forget`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from reporters.history import FORMATS, render_history
from reporters.trend import render_trend_page
from runner.errors import BadInputError, ExprunError
from runner.files import write_atomically
from runner.history.names import STORE_VARIABLE
from runner.reporting import analyse_run
from runner.run_folder import utc_now
from schemas.metrics import METRICS

# runner.history loads SQLAlchemy (~0.15 s): only the commands that use a store import it.
if TYPE_CHECKING:
    from runner.history.store import Store

EXIT_CHANGE = 1
HEADLINE_METRICS = ("throughput", "latency_p99_ms")
HISTORY_EPILOG = """\b
Exit codes:
  0    shown; with --fail-on-change: no regression of at least PCT in the newest runs
  1    with --fail-on-change: a significant regression of at least PCT
  2    bad input: unknown spec, metric or other name, unknown store scheme
  3    the store cannot be reached, read or written
"""


def store_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        metavar="URL",
        default=None,
        help="results store: a file (SQLite), sqlite:///PATH or postgresql://USER@HOST/DB "
        f"(default ${STORE_VARIABLE}, else a file in your data folder)",
    )(command)


@contextmanager
def opened(option: str | None, ctx: click.Context | None = None) -> Iterator[Store]:
    """The store a command names (or its group did), open for the command's duration."""
    from runner.history.location import store_location
    from runner.history.store import open_store

    chosen = option or (ctx.obj if ctx is not None and isinstance(ctx.obj, str) else None)
    store = open_store(store_location(chosen))
    try:
        yield store
    finally:
        store.close()


@click.group("history", invoke_without_command=True, epilog=HISTORY_EPILOG)
@store_option
@click.option("--spec", "spec", metavar="NAME_OR_FILE", help="the spec's name, or its file")
@click.option("--metric", "metrics", multiple=True, help="metric (repeatable)")
@click.option("--scenario", default=None)
@click.option("--variant", default=None)
@click.option("--broker", default=None)
@click.option("--testbed", default=None, help="machine fingerprint or --testbed name of the runs")
@click.option(
    "--last",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="the newest N runs of each series",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown")
@click.option("--changes", is_flag=True, help="only the change points, newest first")
@click.option(
    "--fail-on-change",
    type=click.FloatRange(min=0),
    metavar="PCT",
    default=None,
    help="exit 1 on a significant regression of at least PCT% among the newest runs",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="with --fail-on-change: how many of the newest runs it looks at",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="significance (default 0.01 per series for change points, 0.05 for the gate)",
)
@click.option(
    "--correction",
    type=click.Choice(["none", "holm", "bh"]),
    default="holm",
    show_default=True,
    help="with --fail-on-change: across the series it looks at",
)
@click.option(
    "--html",
    "html",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the trend page (self-contained HTML) there",
)
@click.pass_context
def history(
    ctx: click.Context,
    store: str | None,
    spec: str | None,
    metrics: tuple[str, ...],
    scenario: str | None,
    variant: str | None,
    broker: str | None,
    testbed: str | None,
    last: int,
    fmt: str,
    changes: bool,
    fail_on_change: float | None,
    window: int,
    alpha: float | None,
    correction: str,
    html: Path | None,
) -> None:
    """The series of the runs a results store remembers, newest last, change points marked."""
    from runner.history.series import SeriesFilter, load_history, matching_series

    ctx.obj = store
    if ctx.invoked_subcommand is not None:
        return
    everything = changes or fail_on_change is not None
    chosen = SeriesFilter(
        spec_name=_spec_name(spec) if spec else None,
        testbed=testbed,
        broker=broker,
        variant=variant,
        scenario=scenario,
        metrics=metrics,
    )
    with opened(store) as opened_store:
        keys = matching_series(opened_store, chosen)
        if not metrics:
            # Tables and pages show the headline metrics; changes and the gate look at every
            # metric with a direction.
            keep = {n for n, i in METRICS.items() if i.better} if everything else HEADLINE_METRICS
            keys = [key for key in keys if key.metric in keep]
        if fail_on_change is not None:
            _gate(opened_store, keys, fail_on_change, window, last, alpha, correction)
            return
        shown = load_history(opened_store, keys, last=last, alpha=alpha or 0.01)
    if html is not None:
        _write(html, render_trend_page(shown))
        click.echo(f"wrote {html}", err=True)
        return
    click.echo(render_history(shown, fmt, changes_only=changes), nl=False)


def _gate(
    store: Store,
    keys: list[Any],
    threshold: float,
    window: int,
    last: int,
    alpha: float | None,
    correction: str,
) -> None:
    from runner.history.series import gate

    assert correction in ("none", "holm", "bh")
    findings, looked_at = gate(
        store,
        keys,
        threshold_pct=threshold,
        window=window,
        last=last,
        alpha=alpha or 0.05,
        correction=correction,  # type: ignore[arg-type]
    )
    where = f"the newest {window} runs of {looked_at} series"
    if not findings:
        click.echo(f"no significant regression of at least {threshold:g}% in {where}")
        return
    click.echo(f"{len(findings)} regression(s) of at least {threshold:g}% in {where}:")
    for finding in findings:
        s, c = finding.series, finding.change
        click.echo(
            f"  {s.spec}: {s.broker}/{s.variant}/{s.scenario} {s.metric} "
            f"{c.change_pct:+.1f}% ({c.median_before:.6g} -> {c.median_after:.6g}) from "
            f"{c.commit_after or c.run_after}, p={c.p_adjusted:.2g} ({correction})"
        )
    sys.exit(EXIT_CHANGE)


def _spec_name(spec: str) -> str:
    """A spec's name, or the name inside a spec file."""
    path = Path(spec)
    if not (spec.endswith((".yaml", ".yml")) or path.is_file()):
        return spec
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise BadInputError(f"--spec {spec}: cannot read it: {error}") from None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise BadInputError(f"--spec {spec}: the file has no `name`")
    return name


def _write(path: Path, text: str) -> None:
    try:
        write_atomically(path, text)
    except OSError as error:
        raise ExprunError(f"cannot write {path}: {error.strerror or error}") from None


@history.command("import")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.option("--label", default=None, help="a label for these runs")
@click.option("--commit", default=None, help="the revision of the system under test")
@click.option("--testbed", default=None, help="a testbed name instead of the machine's")
@click.pass_context
def import_command(
    ctx: click.Context,
    run_dirs: tuple[Path, ...],
    store: str | None,
    label: str | None,
    commit: str | None,
    testbed: str | None,
) -> None:
    """Record existing run folders (a run the store has is left as it is)."""
    from runner.history.record import run_record

    with opened(store, ctx.parent) as opened_store:
        for run_dir in run_dirs:
            report = analyse_run(run_dir)
            record = run_record(
                report,
                str(run_dir.resolve()),
                label=label,
                commit=commit,
                testbed=testbed,
                recorded_at=utc_now(),
            )
            added = opened_store.record(record)
            verb = "recorded" if added else "already recorded"
            click.echo(f"{verb}: {record.run.run_key} ({run_dir})")


@history.command("runs")
@store_option
@click.pass_context
def runs_command(ctx: click.Context, store: str | None) -> None:
    """The recorded runs, oldest first, one line each."""
    with opened(store, ctx.parent) as opened_store:
        found = opened_store.runs()
        click.echo(f"{len(found)} run(s) in {opened_store.location.shown}")
        for run in found:
            extra = [f"testbed {run.testbed}"]
            if run.commit:
                extra.append(f"commit {run.commit}")
            if run.spec_commit:
                extra.append(f"spec at {run.spec_commit[:10]}" + (" +" if run.spec_dirty else ""))
            if run.label:
                extra.append(f"label {run.label!r}")
            click.echo(f"{run.run_key}  {run.spec_name}  {'; '.join(extra)}")


@history.command("forget")
@click.argument("run_key")
@store_option
@click.pass_context
def forget_command(ctx: click.Context, run_key: str, store: str | None) -> None:
    """Remove RUN_KEY (as `history runs` lists it) and its points from the store."""
    with opened(store, ctx.parent) as opened_store:
        opened_store.forget(run_key)
        click.echo(f"forgot {run_key}")
