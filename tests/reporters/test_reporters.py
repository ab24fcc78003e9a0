"""Reporters: Markdown sections, tidy CSV, JSON, self-contained HTML; write_reports and
`exprun report` on a synthetic run folder."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_runs import (
    SPEC,
    cell_trials,
    environment,
    make_trial,
    small_spec,
    source_like_trials,
    write_run_folder,
)

from reporters.base import REPORTER_GROUP, Reporter
from reporters.csv import CELLS_COLUMNS, TRIALS_COLUMNS, CsvReporter
from reporters.html import HtmlReporter
from reporters.json import JsonReporter
from reporters.markdown import MarkdownReporter, render_markdown
from reporters.timelines import MAX_POINTS, thinned
from runner.analysis.analyse import analyse
from runner.cli.reports import report_command
from runner.errors import BadInputError
from runner.reporting import markdown_summary, write_reports
from runner.spec.loader import load_spec
from schemas.report import Report
from schemas.results import TrialResult

ALL_FILES = {
    "report.md",
    "trials.csv",
    "cells.csv",
    "comparisons.csv",
    "results.json",
    "report.html",
}


@pytest.fixture(scope="module")
def report() -> Report:
    loaded = load_spec(SPEC)
    run = {"started_at": "2026-01-01T00:00:00Z", "complete": True, "planned_trials": 96}
    return analyse(loaded.spec, source_like_trials(), environment(), run, cells=loaded.cells)


def text(content: str | bytes) -> str:
    return content.decode() if isinstance(content, bytes) else content


def read_table(content: str) -> tuple[list[str], list[dict[str, object]]]:
    """Columns and rows as pandas reads them without arguments (csv module if no pandas)."""
    try:
        import pandas as pd
    except ImportError:
        rows = list(csv.DictReader(io.StringIO(content)))
        return list(rows[0]) if rows else [], list(rows)
    frame = pd.read_csv(io.StringIO(content))
    return list(frame.columns), frame.to_dict("records")


# --------------------------------------------------------------------------- plugins


def test_every_reporter_is_an_installed_plugin() -> None:
    found = {ep.name: ep.load() for ep in entry_points(group=REPORTER_GROUP)}
    assert {"markdown", "csv", "json", "html"} <= set(found)
    for name, cls in found.items():
        reporter = cls()
        assert isinstance(reporter, Reporter)
        assert reporter.name == name


# --------------------------------------------------------------------------- markdown


def test_markdown_has_the_source_reports_sections(report: Report) -> None:
    md = text(MarkdownReporter().render(report)["report.md"])
    headings = re.findall(r"^#{1,4} (.+)$", md, flags=re.M)
    for expected in (
        "Overview",
        "Results by scenario",
        "Variant comparison: against before",
        "Trends across scenarios",
        "Broker comparison: nats vs kafka",
        "Targets",
        "Anomalies",
        "Environment",
    ):
        assert expected in headings, expected
    assert "Throughput (msg/s, higher is better)" in headings
    # change, significance and the test named
    assert "+373.3%" in md
    assert "| better" in md and "| worse" in md
    assert "U = Mann-Whitney U (exact)" in md
    # targets with score, anomalies with evidence
    assert "**Overall score: 17/20 (85.0%)**" in md
    assert "Trend break: nats/after at High" in md
    assert "5.1x below the range of its neighbours" in md


def test_markdown_tables_are_well_formed(report: Report) -> None:
    md = render_markdown(report)
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|:") or line.startswith("|-"):
            header, width = lines[i - 1], line.count("|")
            assert header.count("|") == width
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") - lines[j].count("\\|") == width, lines[j]
                j += 1


def test_markdown_of_a_target_scored_like_the_source_report() -> None:
    spec = load_spec(SPEC).spec
    trials = cell_trials("before", "Low", [142.0, 143.0, 143.0, 144.0, 143.5])
    trials += cell_trials("after", "Low", [360.0, 361.3, 362.0, 361.3, 359.9])
    md = render_markdown(analyse(spec, trials))
    [row] = [line for line in md.splitlines() if line.startswith("| NATS throughput +400%")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:] == ["+152.7%", "38.2%", "better, p=0.008", "FAIL"]


def test_markdown_sums_up_noise_in_one_finding_a_line_per_metric() -> None:
    noisy = [1000.0, 700, 1300, 900, 1150]  # CV 23%
    trials = cell_trials("before", "Low", noisy) + cell_trials("after", "Low", noisy[::-1])
    trials += cell_trials("before", "Medium", [2000.0, 1000, 3000, 1800, 2300])  # CV 36%
    trials += cell_trials("after", "Medium", [1000.0, 1001, 999, 1000, 1002])
    md = render_markdown(analyse(small_spec(), trials))
    anomalies = md.split("## Anomalies", 1)[1].split("\n## ", 1)[0]
    variance = [line for line in anomalies.splitlines() if "run-to-run variance" in line]
    assert variance == ["- ⚠️ **High run-to-run variance: 2 metrics with a CV above 10%**"]
    assert (
        "  - Throughput: 3 of 4 cells, CV 22.8..36.1% (n=5); worst nats/before/Medium: "
        "median 2,000, range 1,000..3,000"
    ) in anomalies
    assert "  - Duration: 3 of 4 cells" in anomalies
    assert anomalies.count("Advice: add repetitions") == 1


def test_markdown_warns_about_partial_runs() -> None:
    trials = cell_trials("before", "Low", [1000.0, 1010.0, 990.0])
    report = analyse(small_spec(), trials, {}, {"complete": False, "interrupted": True})
    assert "> **Warning:** Partial run" in render_markdown(report)


@pytest.mark.parametrize(
    "trials",
    [
        pytest.param([], id="no trials"),
        pytest.param(cell_trials("before", "Low", [1000.0]), id="one trial"),
        pytest.param(
            [
                make_trial("nats", "after", "Medium", rep, {}, status="failed", error="boom")
                for rep in (1, 2, 3)
            ],
            id="all failed",
        ),
    ],
)
def test_every_reporter_survives_thin_runs(trials: list[TrialResult]) -> None:
    report = analyse(small_spec(), trials)
    for reporter in (MarkdownReporter(), CsvReporter(), JsonReporter(), HtmlReporter()):
        assert reporter.render(report)


def test_summary_is_short_and_has_the_verdicts(report: Report) -> None:
    summary = markdown_summary(report)
    assert "Significant changes against before" in summary
    assert "Targets: 17/20 (85.0%)" in summary
    assert "Trend break: nats/after at High" in summary
    assert len(summary.splitlines()) < len(render_markdown(report).splitlines()) / 3


# --------------------------------------------------------------------------- csv and json


def test_trials_csv_is_tidy(report: Report) -> None:
    columns, rows = read_table(text(CsvReporter().render(report)["trials.csv"]))
    assert columns == list(TRIALS_COLUMNS)
    assert len(rows) == sum(len(t.metrics.flat()) for t in report.trials)
    throughput = [
        r
        for r in rows
        if r["metric"] == "throughput" and r["broker"] == "nats" and r["scenario"] == "High"
    ]
    assert {r["unit"] for r in throughput} == {"msg/s"}
    assert all(float(str(r["value"])) > 0 for r in throughput)
    assert len(throughput) == 2 * (5 + 1)  # two variants, five measured + one warm-up each


def test_cells_csv_summarises_each_cell_and_metric(report: Report) -> None:
    columns, rows = read_table(text(CsvReporter().render(report)["cells.csv"]))
    assert columns == list(CELLS_COLUMNS)
    [row] = [
        r
        for r in rows
        if (r["broker"], r["variant"], r["scenario"], r["metric"])
        == ("nats", "after", "High", "throughput")
    ]
    cell = report.cell("nats", "after", "High")
    assert cell is not None
    assert float(str(row["median"])) == pytest.approx(cell.metrics["throughput"].median)
    assert int(float(str(row["n"]))) == 5
    assert int(float(str(row["warmup_excluded"]))) == 1


def test_json_is_the_whole_report(report: Report) -> None:
    content = text(JsonReporter().render(report)["results.json"])
    data = json.loads(content)
    assert data["schema_version"] == 1
    for key in ("spec", "environment", "trials", "cells", "variant_comparisons", "targets"):
        assert data[key]
    assert Report.model_validate_json(content) == report


# --------------------------------------------------------------------------- html


class _Checker(HTMLParser):
    """Tag balance and every reference that could make a browser fetch something."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.references: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "data") and value:
                self.references.append(value)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value:
                self.references.append(value)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


def test_html_is_well_formed_and_self_contained(report: Report) -> None:
    html = text(HtmlReporter().render(report)["report.html"])
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert "http://" not in html and "https://" not in html
    assert all(ref.startswith("#") for ref in checker.references), checker.references
    assert "script" not in checker.tags and "link" not in checker.tags
    assert "@import" not in html and "url(" not in html


def test_html_charts_show_throughput_and_p99_with_ci(report: Report) -> None:
    html = text(HtmlReporter().render(report)["report.html"])
    assert html.count("<svg") == 4  # (throughput, p99 latency) x (kafka, nats)
    assert "Throughput: nats" in html and "Latency p99: kafka" in html
    # a whisker per point that has a CI: 2 brokers x 2 variants x 4 scenarios x 2 metrics
    assert html.count('<path stroke-width="1.5"') == 32
    assert "CI 160.8..163.8" in html  # the tooltip of nats/after/High throughput


# --------------------------------------------------------------------------- writing


def test_write_reports_writes_the_chosen_formats(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "run", source_like_trials(repetitions=3))
    spec = run / "spec.yaml"
    text = spec.read_text()
    assert "\nreports: [markdown, csv, json, html]\n" in text
    spec.write_text(
        text.replace("reports: [markdown, csv, json, html]", "reports: [markdown, csv]")
    )
    written: list[Path] = []
    report = write_reports(run, None, announce=written.append)
    # The spec's `reports:` list: markdown and csv only.
    assert {p.name for p in written} == {"report.md", "trials.csv", "cells.csv", "comparisons.csv"}
    assert report.spec.name == "worker-pool-256"
    assert report.environment["machine"]["cpu"] == "Synthetic CPU @ 3.0GHz"
    assert not list(run.glob("*.partial"))


def test_unknown_format_names_the_installed_ones(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "run", source_like_trials(repetitions=3))
    with pytest.raises(BadInputError, match=r"unknown report format 'pdf' \(installed: .*html"):
        write_reports(run, ["pdf"])


def test_report_command_regenerates_all_four_formats(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "run", source_like_trials())
    args = [str(run)]
    for fmt in ("markdown", "csv", "json", "html"):
        args += ["--format", fmt]
    result = CliRunner().invoke(report_command, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in run.iterdir()} >= ALL_FILES
    md = (run / "report.md").read_text()
    assert "## Anomalies" in md and "Trend break: nats/after at High" in md
    assert json.loads((run / "results.json").read_text())["run"]["complete"] is True
    assert "wrote" in result.output


def test_report_command_from_trials_and_spec_alone(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "run", source_like_trials(repetitions=3))
    (run / "run.json").unlink()
    (run / "environment.json").unlink()
    result = CliRunner().invoke(report_command, [str(run), "--format", "all"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in run.iterdir()} >= ALL_FILES
    assert "environment.json was not recorded" in (run / "report.md").read_text()


def test_report_command_on_a_missing_folder_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(report_command, [str(tmp_path / "nope")])
    assert isinstance(result.exception, BadInputError)
    assert result.exception.exit_code == 2


def test_a_day_of_seconds_is_charted_in_a_few_hundred_points() -> None:
    day = [(float(second), 1000.0 + (second % 7)) for second in range(86_400)]
    day[50_000] = (50_000.0, 9_999.0)  # one bad second: a peak must survive the thinning
    peaks = thinned(day, max)
    assert len(peaks) <= MAX_POINTS and max(y for _, y in peaks) == 9_999.0
    assert peaks[0][0] < peaks[-1][0] < 86_400
    short = [(0.5, 1.0), (1.5, 2.0)]
    assert thinned(short, max) == short
