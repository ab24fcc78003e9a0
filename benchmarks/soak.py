"""The load generator's memory over a soak run: `python -m benchmarks.soak RUN_DIR [--every S]`.

Reads the run folder of `exprun run experiments/soak.yaml` and prints, per trial, a markdown
table of its books (sent, lost, duplicated) and of the load generator's peak RSS every `--every`
seconds (from the per-second series), with the growth per million messages after the first
`--every` seconds (the clients' and the broker's start-up is not growth).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scipy import stats


def rss_course(series: dict[str, Any], every: float) -> list[tuple[float, float, int]]:
    """(seconds into the phase, peak RSS MB, messages published so far) every `every` s."""
    course: list[tuple[float, float, int]] = []
    peak, published, mark = 0.0, 0, every
    columns = ("start_s", "seconds", "published", "loadgen_rss_mb")
    rows = zip(*(series[name] for name in columns), strict=True)
    for start, seconds, sent, rss in rows:
        published += sent
        peak = max(peak, rss or 0.0)
        if start + seconds >= mark:
            course.append((round(start + seconds), peak, published))
            peak, mark = 0.0, mark + every
    return course


def growth_per_million(course: list[tuple[float, float, int]]) -> float | None:
    """The slope of peak RSS over messages published, after the first point (MB per million)."""
    settled = course[1:]
    if len(settled) < 3:
        return None
    fit = stats.linregress([m for _, _, m in settled], [mb for _, mb, _ in settled])
    return float(fit.slope) * 1e6


def summary(trial: dict[str, Any], every: float) -> str:
    m = trial["metrics"]
    course = rss_course(trial["series"], every)
    slope = growth_per_million(course)
    lines = [
        f"### {trial['broker']} / {trial['variant']} / {trial['scenario']}",
        "",
        f"sent {m['sent']:,}, acked {m['acked']:,}, received {m['received']:,}, lost "
        f"{m['lost']}, duplicated {m['duplicated']}, p99 {m['latency_ms']['p99']} ms, peak "
        f"RSS {m['rss_peak_mb']} MB, growth {slope:.3f} MB per million messages"
        if slope is not None
        else f"sent {m['sent']:,}, lost {m['lost']}, duplicated {m['duplicated']}",
        "",
        "| minute | peak RSS MB | messages so far |",
        "|---|---|---|",
    ]
    lines += [f"| {s / 60:g} | {mb:.1f} | {sent:,} |" for s, mb, sent in course]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--every", type=float, default=300.0, help="seconds between points")
    args = parser.parse_args()
    for line in (args.run / "trials.jsonl").read_text().splitlines():
        trial = json.loads(line)
        if not trial["warmup"] and trial.get("series"):
            print(summary(trial, args.every), end="\n\n")


if __name__ == "__main__":
    main()
