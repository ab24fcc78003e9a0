"""`exprun report` and `exprun diff` (registered on the CLI group with `cli.add_command`).

Bad input raises BadInputError (exit 2 through runner.cli.main); a regression beyond
--fail-on-regression exits 1 after the table is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from reporters.diff import FORMATS, render_diff
from runner.analysis.diff import diff as diff_reports
from runner.errors import BadInputError
from runner.reporting import load_report, write_reports
from schemas.report import Diff

EXIT_REGRESSION = 1

DIFF_HELP_EPILOG = """\b
Exit codes:
  0    no significant regression beyond PCT (or no --fail-on-regression)
  1    a significant change worse than PCT% in the bad direction
  2    bad input: missing run folder or results file, incompatible runs, unknown metric
"""


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="NAME",
    help="reporter to run (repeatable; 'all' for every installed one); default: the spec's "
    "`reports:` list",
)
def report_command(run_dir: Path, formats: tuple[str, ...]) -> None:
    """Regenerate the reports of RUN_DIR from its spec.yaml and trials.jsonl."""
    report = write_reports(
        run_dir, list(formats) or None, announce=lambda path: click.echo(f"wrote {path}")
    )
    if report.partial:
        click.echo(f"exprun: {run_dir} is a partial run; reports cover what finished", err=True)


def _label(path: Path, variant: str | None = None) -> str:
    return f"{path}:{variant}" if variant else str(path)


def compute_diff(
    runs: tuple[Path, ...],
    variants: tuple[str, str] | None,
    metrics: tuple[str, ...],
    fail_on_regression: float | None,
    statistics: Mapping[str, Any] | None = None,
) -> Diff:
    """Load the runs and compare them (or two variants of one run).

    `statistics` overrides the new run's settings (alpha, correction) where given.
    """
    if variants:
        if len(runs) != 1:
            raise BadInputError("--variants A B compares two variants of one RUN; give one run")
        old = new = load_report(runs[0])
        labels = _label(runs[0], variants[0]), _label(runs[0], variants[1])
    elif len(runs) == 2:
        old, new = load_report(runs[0]), load_report(runs[1])
        labels = str(runs[0]), str(runs[1])
    else:
        raise BadInputError("give OLD and NEW (run folders or results.json), or RUN --variants A B")
    chosen = {k: v for k, v in (statistics or {}).items() if v is not None}
    return diff_reports(
        old,
        new,
        old_label=labels[0],
        new_label=labels[1],
        variants=variants,
        metrics=metrics,
        fail_on_regression_pct=fail_on_regression,
        settings=new.statistics.model_copy(update=chosen),
    )


@click.command("diff", epilog=DIFF_HELP_EPILOG)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--variants", nargs=2, default=None, metavar="A B", help="compare variant B against A of RUN"
)
@click.option(
    "--fail-on-regression",
    type=click.FloatRange(min=0),
    default=None,
    metavar="PCT",
    help="exit 1 when a significant change is worse than PCT% for a compared metric",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="M",
    help="compare (and check) only this metric (repeatable); default: every metric with a "
    "better direction",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="significance level  [default: the new run's statistics.alpha]",
)
@click.option(
    "--correction",
    type=click.Choice(["none", "holm", "bh"]),
    default=None,
    help="adjust p-values for the many rows compared (holm, bh: Benjamini-Hochberg)  "
    "[default: the new run's statistics.correction]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="markdown",
    show_default=True,
    help="output format",
)
def diff_command(
    runs: tuple[Path, ...],
    variants: tuple[str, str] | None,
    fail_on_regression: float | None,
    metrics: tuple[str, ...],
    alpha: float | None,
    correction: str | None,
    fmt: str,
) -> None:
    """Compare OLD and NEW (run folders or results.json) cell by cell, benchstat-style.

    `exprun diff RUN --variants A B` compares two variants of one run instead.
    """
    statistics = {"alpha": alpha, "correction": correction}
    result = compute_diff(runs, variants, metrics, fail_on_regression, statistics)
    click.echo(render_diff(result, fmt, chosen_metrics=bool(metrics)), nl=False)
    if result.regressions:
        worst = max(result.regressions, key=lambda r: abs(r.change_pct or float("inf")))
        change = f"{worst.change_pct:+.1f}%" if worst.change_pct is not None else "from 0"
        click.echo(
            f"exprun: {len(result.regressions)} significant regression(s) beyond "
            f"{fail_on_regression:g}%; worst: {worst.metric} {worst.new} {change}",
            err=True,
        )
        sys.exit(EXIT_REGRESSION)
