"""Change points on planted series: exprun's detection beside the statistical limit.

`python -m benchmarks.change_points [--seeds N] [--out FILE.json]` prints, per case, how often
exprun finds a planted step (within 2 runs of it) and how often it raises a false alarm,
beside the optimal scan on the same series: the maximum two-sample t over split points of the
per-run values, its threshold calibrated by simulation to the same false alarm rate (for one
step in Gaussian noise nothing does better). Anchors that are installed in this environment
(ruptures' Pelt) are run on the same series too; none is a dependency of exprun.

Cases (60 runs; a step at run 40, or 3 runs before the newest):
- one series, 5% run-to-run noise, steps of 3/5/10/20%, per-series false alarms held at 1%;
- a whole spec's CI gate: 200 series, none changed (how often the gate fails falsely), and one
  series stepped 10% three runs before the newest (how often the gate catches it);
- within-run noise above run-to-run noise (1% run, 5% trial, 5 trials a run): every trial
  against the medians only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runner.analysis.statistics import adjust_p_values
from runner.history.changes import change_points, recent_step

RUNS = 60
AT = 40
LATE = RUNS - 3
NEAR = 2  # a step found within this many runs of where it was planted counts as found
ALPHA = 0.01
GATE_SERIES = 200
GATE_ALPHA = 0.05
GATE_WINDOW = 5

Runs = list[list[float]]


def planted(
    rng: np.random.Generator,
    step: float,
    at: int,
    *,
    run_noise: float = 0.05,
    trial_noise: float = 0.0,
    trials: int = 1,
) -> Runs:
    runs = []
    for run in range(RUNS):
        level = 1000.0 * (1 + (step if run >= at else 0.0)) * (1 + rng.normal(0, run_noise))
        runs.append(list(level * (1 + rng.normal(0, trial_noise, trials))))
    return runs


def scan_t(values: np.ndarray, lowest: int = 3) -> tuple[float, int]:
    """The optimal scan's statistic: max |two-sample t| over splits, and where."""
    n = len(values)
    best, where = 0.0, -1
    for k in range(lowest, n - 2):
        left, right = values[:k], values[k:]
        pooled = ((left.var(ddof=1) * (k - 1)) + right.var(ddof=1) * (n - k - 1)) / (n - 2)
        t = abs(right.mean() - left.mean()) / np.sqrt(pooled * (1 / k + 1 / (n - k)))
        if t > best:
            best, where = float(t), k
    return best, where


def calibrated(rate: float, statistic: Callable[[np.ndarray], float], sims: int = 4000) -> float:
    """The threshold of `statistic` with false alarms at `rate` on unchanged series."""
    rng = np.random.default_rng(7)
    null = sorted(statistic(np.log(np.array(planted(rng, 0.0, AT))[:, 0])) for _ in range(sims))
    return null[int((1 - rate) * sims)]


def medians(runs: Runs) -> Runs:
    return [[float(np.median(trials))] for trials in runs]


def exprun_found(runs: Runs, at: int) -> bool:
    return any(abs(step.index - at) <= NEAR for step in change_points(runs, alpha=ALPHA))


def single_series(seeds: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    unchanged = [planted(rng, 0.0, AT) for _ in range(seeds)]
    false = sum(bool(change_points(runs, alpha=ALPHA)) for runs in unchanged)
    pelt_false = sum(_pelt_any(runs) for runs in unchanged) if _has("ruptures") else None
    threshold = calibrated(false / seeds or ALPHA, lambda v: scan_t(v)[0])
    rows = []
    for at in (AT, LATE):
        for step in (0.03, 0.05, 0.10, 0.20):
            found = limit = anchor = 0
            for _ in range(seeds):
                runs = planted(rng, -step, at)
                found += exprun_found(runs, at)
                t, where = scan_t(np.log(np.array(runs)[:, 0]))
                limit += t > threshold and abs(where - at) <= NEAR
                anchor += _pelt_found(runs, at)
            rows.append(
                {
                    "step_pct": step * 100,
                    "at": at,
                    "exprun": found / seeds,
                    "limit": limit / seeds,
                    "ruptures_pelt": anchor / seeds if _has("ruptures") else None,
                }
            )
    return {
        "false_alarms": false / seeds,
        "ruptures_pelt_false_alarms": pelt_false / seeds if pelt_false is not None else None,
        "rows": rows,
    }


def gate_case(repeats: int) -> dict[str, Any]:
    """How often a whole spec's gate fails with nothing changed, and catches one step."""
    rng = np.random.default_rng(2)
    false = caught = scan_false = scan_caught = 0
    spec_runs: list[list[Runs]] = []
    for repeat in range(repeats * 2):
        stepped = repeat % 2 == 1
        series = [
            planted(rng, -0.10 if stepped and i == 0 else 0.0, LATE) for i in range(GATE_SERIES)
        ]
        spec_runs.append(series)
        steps = [recent_step(runs, GATE_WINDOW) for runs in series]
        p_values = [s.p_value if s is not None else 1.0 for s in steps]
        adjusted = adjust_p_values(p_values, "holm")
        failing = [
            i
            for i, (step, p) in enumerate(zip(steps, adjusted, strict=True))
            if step is not None and p is not None and p < GATE_ALPHA and step.after < step.before
        ]
        if stepped:
            caught += 0 in failing
        else:
            false += bool(failing)
    # The limit: the scan on each series, one threshold for all so that the whole spec fails
    # falsely as often as exprun's gate did; a catch must point at the planted step.
    maxima = [[scan_t(np.log(np.array(r)[:, 0]))[0] for r in s] for s in spec_runs[0::2]]
    spec_max = sorted(max(m) for m in maxima)
    rate = false / repeats
    threshold = spec_max[min(len(spec_max) - 1, int((1 - max(rate, 1 / repeats)) * len(spec_max)))]
    scan_false = sum(max(m) > threshold for m in maxima)
    for series in spec_runs[1::2]:
        t, where = scan_t(np.log(np.array(series[0])[:, 0]))
        scan_caught += t > threshold and abs(where - LATE) <= NEAR
    return {
        "series": GATE_SERIES,
        "false_failures": false / repeats,
        "caught": caught / repeats,
        "limit_false_failures": scan_false / repeats,
        "limit_caught": scan_caught / repeats,
    }


def trial_noise_case(seeds: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    rows = []
    for step in (0.03, 0.05):
        every = only_medians = 0
        for _ in range(seeds):
            runs = planted(rng, -step, AT, run_noise=0.01, trial_noise=0.05, trials=5)
            every += exprun_found(runs, AT)
            only_medians += exprun_found(medians(runs), AT)
        rows.append(
            {"step_pct": step * 100, "every_trial": every / seeds, "medians": only_medians / seeds}
        )
    return {"rows": rows}


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _pelt(runs: Runs) -> list[int]:
    """ruptures' Pelt with a BIC-style penalty: the change points it reports."""
    import ruptures

    values = np.log(np.array(runs)[:, 0])
    sigma = np.std(np.diff(values)) / np.sqrt(2)
    found = (
        ruptures.Pelt(model="l2", min_size=3)
        .fit(values)
        .predict(pen=2 * np.log(len(values)) * sigma**2)
    )
    return list(found[:-1])


def _pelt_found(runs: Runs, at: int) -> bool:
    return _has("ruptures") and any(abs(index - at) <= NEAR for index in _pelt(runs))


def _pelt_any(runs: Runs) -> bool:
    return bool(_pelt(runs))


def table(results: dict[str, Any]) -> list[str]:
    single = results["single"]
    pelt_false = single["ruptures_pelt_false_alarms"]
    pelt_text = "not installed" if pelt_false is None else f"{pelt_false:.1%}"
    lines = [
        f"one series, 60 runs, 5% noise: false alarms: exprun {single['false_alarms']:.1%}, "
        f"ruptures Pelt {pelt_text}",
        "| step | at | exprun | limit (optimal scan) | ruptures Pelt |",
        "|---|---|---|---|---|",
    ]
    for row in single["rows"]:
        pelt = "not installed" if row["ruptures_pelt"] is None else f"{row['ruptures_pelt']:.0%}"
        lines.append(
            f"| {row['step_pct']:g}% | {row['at']} | {row['exprun']:.0%} | {row['limit']:.0%} | "
            f"{pelt} |"
        )
    gate = results["gate"]
    lines.append(
        f"gate, {gate['series']} series: false failures {gate['false_failures']:.1%} (limit "
        f"{gate['limit_false_failures']:.1%}); one 10% step 3 runs before the newest caught "
        f"{gate['caught']:.0%} (limit {gate['limit_caught']:.0%})"
    )
    for row in results["trials"]["rows"]:
        lines.append(
            f"1% run / 5% trial noise, 5 trials, {row['step_pct']:g}% step: every trial "
            f"{row['every_trial']:.0%}, medians only {row['medians']:.0%}"
        )
    return lines


def run(seeds: int, gate_repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    results = {
        "seeds": seeds,
        "single": single_series(seeds),
        "gate": gate_case(gate_repeats),
        "trials": trial_noise_case(seeds),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--gate-repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = run(args.seeds, args.gate_repeats)
    print("\n".join(table(results)))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
