"""`exprun diff`: run folders or results.json, variants of one run, regressions, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from synthetic_runs import SPEC, environment, source_like_trials, write_run_folder

from reporters.diff import render_diff_csv, render_diff_markdown
from runner.analysis.analyse import analyse
from runner.analysis.diff import diff as diff_reports
from runner.analysis.diff import environment_differences
from runner.cli.reports import diff_command
from runner.errors import BadInputError
from runner.reporting import write_reports
from runner.spec.loader import load_spec
from schemas.report import Diff, verdict_p


def drop_nats_after(fraction: float) -> Any:
    def tweak(broker: str, variant: str, scenario: str, rep: int, m: dict[str, Any]) -> None:
        if (broker, variant) == ("nats", "after"):
            m["throughput"] *= 1 - fraction

    return tweak


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    old = write_run_folder(root / "old", source_like_trials(seed=1))
    new = write_run_folder(root / "slower", source_like_trials(seed=2, tweak=drop_nats_after(0.30)))
    moved = write_run_folder(
        root / "moved",
        source_like_trials(seed=3),
        env=environment(**{"machine.cpu": "Other CPU @ 2.0GHz", "brokers.nats.version": "2.12.0"}),
    )
    write_reports(old, ["json"])
    return {"old": old, "slower": new, "moved": moved}


def diff(*args: str | Path) -> Result:
    return CliRunner().invoke(diff_command, [str(a) for a in args])


def test_planted_30pct_throughput_drop_fails_at_10pct(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["slower"], "--fail-on-regression", "10")
    assert result.exit_code == 1, result.output
    assert "significant regression(s) beyond 10%" in result.output
    assert "worse (regression)" in result.output
    assert "throughput" in result.output


def test_a_run_against_itself_passes(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["old"], "--fail-on-regression", "10")
    assert result.exit_code == 0, result.output
    assert "No significant regression beyond 10%" in result.output


def test_a_drop_below_the_threshold_passes(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["slower"], "--fail-on-regression", "40")
    assert result.exit_code == 0, result.output


def test_metric_option_limits_the_regression_check(runs: dict[str, Path]) -> None:
    result = diff(
        runs["old"], runs["slower"], "--fail-on-regression", "10", "--metric", "latency_p99_ms"
    )
    assert result.exit_code == 0, result.output
    assert "Throughput" not in result.output


def test_benchstat_table_with_geomean(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["slower"], "--metric", "throughput")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    [header] = [line for line in lines if line.startswith("| Broker")]
    assert [c.strip() for c in header.strip("|").split("|")][3:7] == ["old", "new", "Change", "p"]
    [row] = [
        line
        for line in lines
        if line.startswith("| nats") and "| High " in line and "after" in line
    ]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert -35 < float(cells[5].rstrip("%")) < -25
    assert cells[7] == "worse"
    [geomean] = [line for line in lines if line.startswith("| geomean")]
    assert "16 cells" in geomean
    assert "~" in result.output  # the untouched cells


def test_results_json_works_like_the_run_folder(runs: dict[str, Path]) -> None:
    from_folder = diff(runs["old"], runs["slower"], "--format", "json")
    from_json = diff(runs["old"] / "results.json", runs["slower"], "--format", "json")
    a, b = Diff.model_validate_json(from_folder.output), Diff.model_validate_json(from_json.output)
    assert a.rows == b.rows


def test_two_variants_of_one_run(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], "--variants", "before", "after", "--format", "json")
    assert result.exit_code == 0, result.output
    d = Diff.model_validate_json(result.output)
    [row] = [
        r
        for r in d.rows
        if r.metric == "throughput" and r.new.broker == "nats" and r.new.scenario == "Medium"
    ]
    assert (row.old.variant, row.new.variant) == ("before", "after")
    assert row.verdict == "better"
    assert d.environment_differences == []


def test_environment_differences_are_shown_above_the_table(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["moved"])
    assert result.exit_code == 0
    output = result.output
    warning = output.index("The environments differ")
    assert warning < output.index("| Broker")
    assert "machine.cpu: Synthetic CPU @ 3.0GHz -> Other CPU @ 2.0GHz" in output
    assert "brokers.nats.version: 2.11.0 -> 2.12.0" in output
    assert "The environments differ" not in diff(runs["old"], runs["slower"]).output


def test_csv_output_loads(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["slower"], "--format", "csv", "--fail-on-regression", "10")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.output)))
    flagged = {(r["broker"], r["scenario"]) for r in rows if r["regression"] == "true"}
    assert flagged == {("nats", s) for s in ("Low", "Medium", "High", "Extreme")}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["{tmp}/missing", "{old}"], "no such run folder"),
        (["{old}"], "give OLD and NEW"),
        (["{old}", "{old}", "--variants", "before", "after"], "give one run"),
        (["{old}", "--variants", "before", "nope"], "no variant 'nope'"),
        (["{old}", "{old}", "--metric", "thruput"], "did you mean 'throughput'"),
        (["{tmp}/garbage.json", "{old}"], "not a readable results.json"),
        (["{tmp}/other.json", "{old}"], "schema_version"),
    ],
)
def test_bad_input_exits_2_with_a_reason(
    runs: dict[str, Path], tmp_path: Path, args: list[str], reason: str
) -> None:
    (tmp_path / "garbage.json").write_text("{nope")
    (tmp_path / "other.json").write_text(json.dumps({"schema_version": 99}))
    result = diff(*(a.format(tmp=tmp_path, old=runs["old"]) for a in args))
    assert isinstance(result.exception, BadInputError), result.output
    assert result.exception.exit_code == 2
    assert reason in str(result.exception)
    assert "\n" not in str(result.exception)


def test_runs_without_a_common_cell_are_incompatible(tmp_path: Path) -> None:
    kafka = write_run_folder(tmp_path / "kafka", source_like_trials(brokers=("kafka",)))
    nats = write_run_folder(tmp_path / "nats", source_like_trials(brokers=("nats",)))
    result = diff(kafka, nats)
    assert isinstance(result.exception, BadInputError)
    message = str(result.exception)
    assert (
        "incompatible runs" in message and "brokers kafka" in message and "brokers nats" in message
    )


def test_cells_only_in_one_run_are_named(tmp_path: Path) -> None:
    both = write_run_folder(tmp_path / "both", source_like_trials())
    nats = write_run_folder(tmp_path / "nats", source_like_trials(brokers=("nats",)))
    result = diff(both, nats)
    assert result.exit_code == 0
    assert "8 cell(s) only in the old run, not compared: kafka/before/Low" in result.output


def test_single_variants_under_different_names_are_matched_with_a_warning(
    tmp_path: Path,
) -> None:
    old = write_run_folder(tmp_path / "a", source_like_trials(variants=("before",)))
    new = write_run_folder(tmp_path / "b", source_like_trials(variants=("v2",), seed=9))
    result = diff(old, new, "--metric", "throughput")
    assert result.exit_code == 0, result.output
    assert "variants matched by position: 'before' (old) vs 'v2' (new)" in result.output
    assert "before -> v2" in result.output


def test_a_corrected_spec_adjusts_the_diff_family_too() -> None:
    spec = load_spec(SPEC).spec
    spec = spec.model_copy(
        update={"statistics": spec.statistics.model_copy(update={"correction": "bh"})}
    )
    old = analyse(spec, source_like_trials(seed=1))
    new = analyse(spec, source_like_trials(seed=2, tweak=drop_nats_after(0.30)))
    # The family is what is compared: 16 throughput cells, 4 of them with a real drop.
    result = diff_reports(
        old,
        new,
        old_label="old",
        new_label="new",
        metrics=["throughput"],
        fail_on_regression_pct=10,
    )
    assert len(result.rows) == 16
    for row in result.rows:
        adjusted = verdict_p(row)
        assert row.p_adjusted is not None and adjusted is not None and row.p_value is not None
        assert adjusted >= row.p_value
        assert row.significant == (adjusted < 0.05 and row.verdict != "~")
    assert {(r.new.broker, r.new.variant) for r in result.regressions} == {("nats", "after")}
    assert len(result.regressions) == 4
    assert "Benjamini-Hochberg-adjusted over the 16 tests made" in render_diff_markdown(result)
    header = render_diff_csv(result).splitlines()[0].split(",")
    assert header[header.index("p_value") + 1] == "p_adjusted"


def test_correction_option_quiets_chance_findings_between_two_runs_of_one_setup(
    runs: dict[str, Path],
) -> None:
    """old and moved come from the same setup (seeds 1 and 3): what differs is chance."""

    def significant(*options: str) -> int:
        result = diff(runs["old"], runs["moved"], "--format", "json", *options)
        assert result.exit_code == 0, result.output
        report = Diff.model_validate_json(result.output)
        return sum(row.significant for row in report.rows)

    assert significant() > 0  # 368 rows tested one by one at alpha 0.05
    assert significant("--correction", "bh") == 0
    assert significant("--alpha", "0.001") == 0


def test_alpha_and_correction_options_show_in_the_legend(runs: dict[str, Path]) -> None:
    result = diff(runs["old"], runs["slower"], "--alpha", "0.01", "--correction", "holm")
    assert result.exit_code == 0, result.output
    assert "better/worse: p < 0.01" in result.output
    assert "Holm-adjusted over the" in result.output


def test_a_different_number_of_load_generators_is_an_environment_difference() -> None:
    old = {"python": "3.11.7", "load_generators": {"hosts": 1, "processes": 1}}
    new = {"python": "3.11.7", "load_generators": {"hosts": 1, "processes": 2}}
    differences = environment_differences(old, new)
    assert [(d.key, d.old, d.new) for d in differences] == [("load_generators.processes", "1", "2")]
    # A run from before load generators were recorded is no evidence either way.
    assert environment_differences({"python": "3.11.7"}, new) == []


def test_a_different_number_of_load_hosts_is_an_environment_difference() -> None:
    """Host counts differ; which workers they were (their addresses) is no difference."""
    machines = [{"worker": "tcp://10.0.0.7:39211", "clients": {"nats-py": "2.16.0"}}]
    old = {"load_generators": {"engine": "local", "hosts": 1, "processes": 1}}
    new = {"load_generators": {"engine": "dask", "hosts": 2, "processes": 1, "machines": machines}}
    differences = environment_differences(old, new)
    assert [(d.key, d.old, d.new) for d in differences] == [
        ("load_generators.engine", "local", "dask"),
        ("load_generators.hosts", "1", "2"),
    ]
