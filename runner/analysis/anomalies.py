"""What looks wrong in a run, each finding with its evidence in numbers and advice."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from runner.analysis import statistics as st
from runner.analysis.broker_evidence import broker_evidence
from runner.analysis.cells import CellTuple, cell_key, measured
from runner.analysis.context import AnalysisContext
from runner.analysis.shortfall import SHORTFALL, falls_short, shortfall_cause
from runner.analysis.timeline import find_climb, find_sag, judged_windows
from schemas.metrics import metric_info
from schemas.report import Anomaly
from schemas.report import format_number as num
from schemas.results import TrialResult
from schemas.units import parse_duration

# A middle scenario this many times outside its neighbours' range breaks the trend; 2x is
# far beyond run-to-run noise (usually < 10%) yet catches the source report's NATS High
# case (161.82 msg/s between 830.74 and 1169.39: 5.1x below).
TREND_FACTOR = 2.0
# Metrics that should move smoothly with the message count (trend breaks) and whose
# repeatability matters (high variance). Counts and leaks have rules of their own.
TREND_METRICS = (
    "throughput",
    "publish_throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "publish_latency_p99_ms",
    "duration_s",
)
VARIANCE_METRICS = (
    "throughput",
    "publish_throughput",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "publish_latency_p50_ms",
    "publish_latency_p99_ms",
    "duration_s",
)
# CV from two values says little; three is the fewest for which it is worth a warning.
MIN_SAMPLES_FOR_CV = 3
# Cross-host latencies are trusted while the clocks' uncertainty stays below this share of p50.
CLOCK_UNCERTAINTY_SHARE = 0.10
# Reasons JetStream (and nats-py) give when a stream limit refuses a publish.
LIMIT_REASON = re.compile(r"limit|maximum|max[_ ]?(msgs|bytes)|exceeded|insufficient", re.I)


def find_anomalies(ctx: AnalysisContext) -> list[Anomaly]:
    found: list[Anomaly] = []
    found += _trend_anomalies(ctx)
    for key in ctx.cell_keys():
        found += _variance_anomalies(ctx, key)
        found += _delivery_anomalies(ctx, key)
        found += _limit_anomalies(ctx, key)
        found += _leak_anomalies(ctx, key)
        found += _failure_anomalies(ctx, key)
        found += _shortfall_anomalies(ctx, key)
        found += _clock_anomalies(ctx, key)
        found += _timeline_anomalies(ctx, key)
        found += _consumer_anomalies(ctx, key)
        found += _fault_broker_anomalies(ctx, key)
        found += _telemetry_anomalies(ctx, key)
    return found


def _trend_anomalies(ctx: AnalysisContext) -> list[Anomaly]:
    out: list[Anomaly] = []
    for broker in ctx.brokers:
        for variant in ctx.variants:
            for metric in TREND_METRICS:
                points = [
                    (s, m)
                    for s in ctx.scenarios
                    if (m := ctx.median((broker, variant, s), metric)) is not None
                ]
                for brk in st.trend_breaks(points, factor=TREND_FACTOR):
                    out.append(_trend_anomaly(ctx, (broker, variant, brk.scenario), metric, brk))
    return out


def _trend_anomaly(
    ctx: AnalysisContext, key: CellTuple, metric: str, brk: st.TrendBreak
) -> Anomaly:
    info = metric_info(metric)
    summary = ctx.summaries[key][metric]
    evidence = (
        f"median {num(brk.value)} at {brk.scenario} is {brk.ratio:.1f}x {brk.direction} the "
        f"range of its neighbours {brk.prev_scenario} {num(brk.prev_value)} and "
        f"{brk.next_scenario} {num(brk.next_value)} (threshold {brk.factor:g}x)"
    )
    if summary.n >= 2 and summary.min is not None and summary.max is not None:
        lo, hi = min(brk.prev_value, brk.next_value), max(brk.prev_value, brk.next_value)
        # Whether every repetition misses the neighbours' range tells a one-off from a pattern.
        consistent = summary.max < lo if brk.direction == "below" else summary.min > hi
        evidence += (
            f"; its {summary.n} repetitions range {num(summary.min)}..{num(summary.max)} "
            + ("- every one of them" if consistent else "- not all of them")
            + f" {brk.direction} the neighbours"
        )
    elif summary.n == 1:
        evidence += "; from a single repetition"
    return Anomaly(
        kind="trend_break",
        severity="warning",
        cell=cell_key(key),
        metric=metric,
        message=(
            f"{info.label} of {key[0]}/{key[1]} at {key[2]} breaks the trend of its "
            f"neighbouring scenarios ({brk.ratio:.1f}x {brk.direction})"
        ),
        evidence=evidence,
        advice=(
            "look at the same cell's latency, duration and publish errors for the cause, and "
            f"re-run it alone (--scenario {key[2]} --broker {key[0]}) to see whether it repeats"
        ),
    )


def _variance_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    out: list[Anomaly] = []
    threshold = ctx.settings.cv_threshold_pct
    for metric in VARIANCE_METRICS:
        summary = ctx.summaries.get(key, {}).get(metric)
        if summary is None or summary.n < MIN_SAMPLES_FOR_CV:
            continue
        if not st.high_variance(summary, threshold) or summary.cv_pct is None:
            continue
        out.append(
            Anomaly(
                kind="high_variance",
                severity="warning",
                cell=cell_key(key),
                metric=metric,
                message=(
                    f"{metric_info(metric).label} of {'/'.join(key)} varies "
                    f"{summary.cv_pct:.1f}% run to run"
                ),
                evidence=(
                    f"CV {summary.cv_pct:.1f}% over n={summary.n} (median {num(summary.median)}, "
                    f"range {num(summary.min)}..{num(summary.max)}), above the "
                    f"{threshold:g}% threshold"
                ),
                advice=(
                    f"add repetitions (now {summary.n}; try {max(2 * summary.n, 10)}) so "
                    "that noise cannot hide or fake a change, and look for other load on "
                    "the machine"
                ),
            )
        )
    return out


def _ok_trials(ctx: AnalysisContext, key: CellTuple) -> list[TrialResult]:
    return measured(ctx.by_cell.get(key, ()))


def _delivery_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    trials = _ok_trials(ctx, key)
    found = [
        _loss_anomaly(key, trials),
        _duplicates_anomaly(key, trials),
        _publish_errors_anomaly(key, trials),
        _failed_delivered_anomaly(key, trials),
    ]
    return [anomaly for anomaly in found if anomaly is not None]


def _loss_anomaly(key: CellTuple, trials: list[TrialResult]) -> Anomaly | None:
    """Acked messages never received, or fewer received than sent without any error."""
    lossy = [t for t in trials if t.metrics.lost > 0]
    short = [
        t
        for t in trials
        if t.metrics.lost == 0
        and t.metrics.sent > 0
        and t.metrics.received < t.metrics.sent
        and not t.metrics.publish_errors
    ]
    if not lossy and not short:
        return None
    worst = max(lossy or short, key=lambda t: t.metrics.sent - t.metrics.received)
    m = worst.metrics
    lost = sum(t.metrics.lost for t in lossy)
    evidence = (
        f"{lost:,} acked messages never received in {len(lossy)} of {len(trials)} trials"
        if lossy
        else f"received fewer than sent without publish errors in {len(short)} of "
        f"{len(trials)} trials"
    )
    evidence += (
        f"; worst: repetition {worst.repetition}, sent {m.sent:,}, acked {m.acked:,}, "
        f"received {m.received:,} (success {m.success_rate:.2f}%)"
    )
    lossy_subscriptions = [f for f in worst.subscriptions if f.lost]
    if lossy_subscriptions:
        evidence += "; lost by " + ", ".join(
            f"subscription {f.subscription} (topic {f.topic}): {f.lost:,}"
            for f in lossy_subscriptions
        )
    advice = "check the drain timeout and the stream/topic limits of this cell"
    if worst.publish_policy is not None and worst.publish_policy.at_most_once:
        slow = sum(t.metrics.slow_consumers or 0 for t in lossy)
        if slow:
            evidence += f"; the server cut off {slow:,} slow consumer(s) in those trials"
        advice = (
            "core NATS delivers at most once: what a subscriber cannot take is dropped; lower "
            "the rate, add consumers, or store the messages (jetstream: true)"
        )
    return Anomaly(
        kind="loss",
        severity="warning",
        cell=cell_key(key),
        metric="lost",
        message=f"messages lost in {'/'.join(key)}",
        evidence=evidence,
        advice=advice,
    )


def _duplicates_anomaly(key: CellTuple, trials: list[TrialResult]) -> Anomaly | None:
    duplicated = [t for t in trials if t.metrics.duplicated > 0]
    if not duplicated:
        return None
    total = sum(t.metrics.duplicated for t in duplicated)
    return Anomaly(
        kind="duplicates",
        severity="warning",
        cell=cell_key(key),
        metric="duplicated",
        message=f"duplicate deliveries in {'/'.join(key)}",
        evidence=(
            f"{total:,} deliveries beyond the first in {len(duplicated)} of "
            f"{len(trials)} trials (max {max(t.metrics.duplicated for t in duplicated):,})"
        ),
        advice="redeliveries point at ack timeouts or consumer restarts",
    )


def _publish_errors_anomaly(key: CellTuple, trials: list[TrialResult]) -> Anomaly | None:
    reasons: dict[str, int] = defaultdict(int)
    erring = 0
    for trial in trials:
        if trial.metrics.publish_errors:
            erring += 1
        for reason, count in trial.metrics.publish_errors.items():
            reasons[reason] += count
    if not reasons:
        return None
    by_reason = ", ".join(f"{r}: {c:,}" for r, c in sorted(reasons.items()))
    evidence = f"{by_reason} (in {erring} of {len(trials)} trials)"
    failed = [t.metrics.publish_failed for t in trials if t.metrics.publish_failed is not None]
    unknown = [t.metrics.publish_unknown for t in trials if t.metrics.publish_unknown is not None]
    if failed and unknown:
        evidence += (
            f"; {sum(failed):,} refused by the broker (not stored), {sum(unknown):,} with an "
            "unknown outcome (a try went unanswered: may be stored)"
        )
    return Anomaly(
        kind="publish_errors",
        severity="warning",
        cell=cell_key(key),
        metric="publish_errors_total",
        message=f"publish errors in {'/'.join(key)}",
        evidence=evidence,
    )


def _failed_delivered_anomaly(key: CellTuple, trials: list[TrialResult]) -> Anomaly | None:
    """A publish the broker refused, whose message was delivered all the same."""
    wrong = [t for t in trials if (t.metrics.failed_delivered or 0) > 0]
    if not wrong:
        return None
    total = sum(t.metrics.failed_delivered or 0 for t in wrong)
    return Anomaly(
        kind="failed_delivered",
        severity="warning",
        cell=cell_key(key),
        metric="failed_delivered",
        message=f"messages whose publish failed were delivered in {'/'.join(key)}",
        evidence=f"{total:,} messages reported as refused by the broker reached a consumer "
        f"(in {len(wrong)} of {len(trials)} trials)",
        advice="the broker stored what it said it refused: the failed counts of this cell "
        "overstate the loss, and the broker's error answer deserves a bug report",
    )


def _limit_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """JetStream stream limits reached: refused publishes, or old messages discarded."""
    trials = _ok_trials(ctx, key)
    if not trials or trials[0].broker_type != "nats":
        return []
    max_msgs, max_bytes = ctx.setting(key, "max_msgs"), ctx.setting(key, "max_bytes")
    discard, size = ctx.setting(key, "discard"), ctx.setting(key, "message_size")
    limits = f"stream max_msgs {_limit(max_msgs)}, max_bytes {_limit(max_bytes)}, discard {discard}"
    refused: dict[str, int] = defaultdict(int)
    for trial in trials:
        for reason, count in trial.metrics.publish_errors.items():
            if LIMIT_REASON.search(reason):
                refused[reason] += count

    def binds(sent: int) -> bool:
        # With discard old a full stream drops its oldest messages silently: suspect it only
        # when the trial's volume exceeds a declared limit.
        by_msgs = isinstance(max_msgs, int) and max_msgs < sent
        by_bytes = isinstance(max_bytes, int) and isinstance(size, int) and max_bytes < sent * size
        return by_msgs or by_bytes

    dropped = [
        t
        for t in trials
        if discard == "old" and 0 < t.metrics.received < t.metrics.sent and binds(t.metrics.sent)
    ]
    if not refused and not dropped:
        return []
    if refused:
        what = ", ".join(f"{r}: {c:,}" for r, c in sorted(refused.items()))
        evidence = f"publishes refused at a limit ({what}); {limits}"
    else:
        worst = min(dropped, key=lambda t: t.metrics.received)
        evidence = (
            f"received {worst.metrics.received:,} of {worst.metrics.sent:,} sent "
            f"(repetition {worst.repetition}; {len(dropped)} of {len(trials)} trials short) "
            f"- more than the stream holds, so its oldest messages were discarded; {limits}"
        )
    return [
        Anomaly(
            kind="limit_reached",
            severity="warning",
            cell=cell_key(key),
            message=f"JetStream stream limit reached in {'/'.join(key)}",
            evidence=evidence,
            advice="raise max_msgs/max_bytes above the scenario's volume if the limit is not "
            "what the experiment is about",
        )
    ]


def _limit(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _leak_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    trials = _ok_trials(ctx, key)
    if not trials:
        return []
    settle = ctx.setting(key, "settle_time")
    after = f"after the {_seconds(settle)} settle time" if settle is not None else "after settle"
    out: list[Anomaly] = []
    for metric, what in (("leaked_threads", "threads"), ("leaked_tasks", "tasks")):
        values = [v for t in trials if (v := getattr(t.metrics, metric)) is not None]
        leaking = [v for v in values if v > 0]
        if not leaking:
            continue
        summary = st.summarize(values)
        evidence = (
            f"{metric} median {num(summary.median)} (max {num(summary.max)}) {after}, "
            f"in {len(leaking)} of {len(values)} trials"
        )
        if metric == "leaked_threads":
            before = ctx.median(key, "threads_before")
            left = ctx.median(key, "threads_after")
            evidence += f"; threads before {num(before)}, after settle {num(left)} (medians)"
            lingered = ctx.median(key, "lingering_threads")
            if lingered:
                # The source report's case: 134 "leaks" at 100 ms, of which 133 just lingered.
                evidence += f"; another {num(lingered)} lingered but exited within the settle time"
        out.append(
            Anomaly(
                kind="leak",
                severity="warning",
                cell=cell_key(key),
                metric=metric,
                message=f"{what} leaked in {'/'.join(key)}: they survive the settle time",
                evidence=evidence,
                advice="a real leak: these outlive the declared settle time",
            )
        )
    lingering = [v for t in trials if (v := t.metrics.lingering_threads) is not None and v > 0]
    leaked = [v for t in trials if (v := t.metrics.leaked_threads) is not None and v > 0]
    if lingering and not leaked:
        out.append(
            Anomaly(
                kind="lingering",
                severity="info",
                cell=cell_key(key),
                metric="lingering_threads",
                message=f"threads lingered in {'/'.join(key)} but exited within the settle time",
                evidence=(
                    f"up to {max(lingering):,} threads were alive right after the measured phase "
                    f"in {len(lingering)} of {len(trials)} trials; none was left {after}"
                ),
                advice="not a leak; a shorter settle time would have counted them as leaked",
            )
        )
    return out


def _seconds(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"
    return str(value)


def _failure_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    trials = ctx.by_cell.get(key, [])
    failed = [t for t in trials if t.status == "failed"]
    if not failed:
        return []
    errors = list(dict.fromkeys((t.error or "no reason recorded").splitlines()[0] for t in failed))
    shown = "; ".join(e[:160] for e in errors[:3]) + ("; ..." if len(errors) > 3 else "")
    warmups = sum(t.warmup for t in failed)
    counted = f"{len(failed)} of {len(trials)} trials failed"
    if warmups:
        counted += f" ({warmups} of them warm-up)"
    return [
        Anomaly(
            kind="failed_trials",
            severity="warning",
            cell=cell_key(key),
            message=f"failed trials in {'/'.join(key)} (excluded from the figures)",
            evidence=f"{counted}: {shown}",
        )
    ]


def _declared_rate(trial: TrialResult) -> float | None:
    rate = trial.config.get("workload", {}).get("rate")
    return float(rate) if isinstance(rate, int | float) else None


def _shortfall_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """Paced trials that did not offer their declared rate: the harness, or the broker?"""
    trials = _ok_trials(ctx, key)
    short = [t for t in trials if falls_short(t.metrics.achieved_rate, _declared_rate(t))]
    if not short:
        return []
    worst = min(short, key=lambda t: (t.metrics.achieved_rate or 0) / (_declared_rate(t) or 1))
    rate, achieved = _declared_rate(worst) or 0.0, worst.metrics.achieved_rate or 0.0
    cause = shortfall_cause(worst.metrics)
    out_of_cpu = "out of CPU" in cause
    return [
        Anomaly(
            kind="rate_shortfall",
            severity="warning",
            cell=cell_key(key),
            metric="achieved_rate",
            message=f"{'/'.join(key)} did not offer its declared rate",
            evidence=(
                f"{len(short)} of {len(trials)} trials fell more than "
                f"{SHORTFALL * 100:g}% short; worst: repetition {worst.repetition}, "
                f"{num(achieved)} of {num(rate)} msg/s ({100 * (1 - achieved / rate):.1f}% "
                f"short); cause: {cause}"
            ),
            advice=(
                "the load generator, not the broker, limited this cell: lower the rate or give "
                "exprun more CPU before reading its figures as the broker's"
                if out_of_cpu
                else "the broker (or the in-flight window: publish.max_pending, librdkafka's "
                "queue) could not take this rate: its figures are of an overloaded broker"
            ),
        )
    ]


def _timeline_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """Throughput sagging, or p99 climbing, within the cell's median trial."""
    ramp = ctx.setting(key, "ramp")
    ramp_s = parse_duration(ramp) if isinstance(ramp, str | int | float) else 0.0
    judged = [
        (t, judged_windows(t.series, ramp_s)) for t in _ok_trials(ctx, key) if t.series is not None
    ]
    judged = [(t, w) for t, w in judged if w and t.metrics.throughput is not None]
    if not judged:
        return []
    judged.sort(key=lambda pair: pair[0].metrics.throughput or 0.0)
    median_trial, windows = judged[len(judged) // 2]
    where = "/".join(key)
    out: list[Anomaly] = []
    sag = find_sag(windows)
    if sag is not None:
        seen = sum(find_sag(w) is not None for _, w in judged)
        out.append(
            Anomaly(
                kind="throughput_sag",
                severity="warning",
                cell=cell_key(key),
                metric="throughput",
                message=f"throughput sags within the trials of {where}",
                evidence=(
                    f"median trial (repetition {median_trial.repetition}): down to "
                    f"{num(sag.lowest)} msg/s, under half its median window "
                    f"{num(sag.median)} msg/s, from {sag.start_s:g}s to {sag.end_s:g}s; "
                    f"seen in {seen} of {len(judged)} trials"
                    + _the_broker(median_trial, sag.start_s, sag.end_s)
                ),
                advice="look at the broker's log and the time-series chart at that window "
                "(compaction, a GC pause, a full in-flight window, a leader change)",
            )
        )
    climb = find_climb(windows)
    if climb is not None:
        seen = sum(find_climb(w) is not None for _, w in judged)
        out.append(
            Anomaly(
                kind="latency_climb",
                severity="warning",
                cell=cell_key(key),
                metric="latency_p99_ms",
                message=f"p99 latency climbs steadily within the trials of {where}",
                evidence=(
                    f"median trial (repetition {median_trial.repetition}): p99 from "
                    f"{num(climb.first_ms)} ms to {num(climb.last_ms)} ms between "
                    f"{climb.start_s:g}s and {climb.end_s:g}s (rank correlation "
                    f"{climb.correlation:.2f}); seen in {seen} of {len(judged)} trials"
                    + _the_broker(median_trial, climb.start_s, climb.end_s)
                ),
                advice="a queue grows somewhere: the broker or the consumers do not keep up "
                "with this rate, so a longer trial would show a higher p99",
            )
        )
    return out


def _the_broker(trial: TrialResult, start_s: float, end_s: float) -> str:
    """ "; the broker: ..." with its side of those seconds, when its telemetry shows any."""
    if trial.series is None:
        return ""
    seen = broker_evidence(trial.telemetry, trial.series, start_s, end_s)
    return f"; the broker: {'; '.join(seen)}" if seen else ""


FAULT_WINDOW_S = 5.0  # after a fault with no recovery measured, the seconds looked at


def _fault_broker_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """The broker's side of each fault of the cell's median trial (leader moves, replicas)."""
    trials = [t for t in _ok_trials(ctx, key) if t.faults and t.telemetry is not None]
    if not trials:
        return []
    trials.sort(key=lambda t: t.metrics.throughput or 0.0)
    trial = trials[len(trials) // 2]
    lines = []
    for fault in trial.faults:
        if fault.at_s is None or trial.series is None:
            continue
        until = fault.at_s + (fault.recovery_s or FAULT_WINDOW_S)
        seen = broker_evidence(trial.telemetry, trial.series, fault.at_s, until)
        told = "; ".join(seen) if seen else "no leader change or replica trouble seen"
        lines.append(f"{fault.action} at {num(fault.at_s)} s: {told}")
    if not lines:
        return []
    return [
        Anomaly(
            kind="broker_in_fault",
            severity="info",
            cell=cell_key(key),
            message=f"the broker's side of the faults of {'/'.join(key)}",
            evidence=f"median trial (repetition {trial.repetition}): " + " | ".join(lines),
        )
    ]


def _telemetry_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """Telemetry that was asked for and not read: the figures stand, the broker's view is gone."""
    warnings = sorted(
        {w for t in _ok_trials(ctx, key) for w in t.warnings if w.startswith("telemetry")}
    )
    if not warnings:
        return []
    return [
        Anomaly(
            kind="telemetry_missing",
            severity="warning",
            cell=cell_key(key),
            message=f"the broker's telemetry was not (fully) read in {'/'.join(key)}",
            evidence="; ".join(warnings),
            advice="check the telemetry URL; the trial's own figures are unaffected",
        )
    ]


DEFAULT_MAX_ACK_PENDING = 1000  # nats-server's, for a consumer that acks


def _consumer_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """Group rebalances while measuring, redeliveries, and the ack-pending limit reached."""
    trials = _ok_trials(ctx, key)
    where = "/".join(key)
    out: list[Anomaly] = []
    rebalanced = [t for t in trials if (t.metrics.rebalances or 0) > 0]
    if rebalanced:
        out.append(
            Anomaly(
                kind="rebalance",
                severity="warning",
                cell=cell_key(key),
                metric="rebalances",
                message=f"consumer groups rebalanced while {where} was measured",
                evidence=f"{sum(t.metrics.rebalances or 0 for t in rebalanced)} rebalance(s) in "
                f"{len(rebalanced)} of {len(trials)} trials",
                advice="a rebalance stops consumption: look at session.timeout.ms, "
                "max.poll.interval.ms and consumers joining late",
            )
        )
    redelivered = [t for t in trials if (t.metrics.redelivered or 0) > 0]
    if redelivered:
        total = sum(t.metrics.redelivered or 0 for t in redelivered)
        out.append(
            Anomaly(
                kind="redelivered",
                severity="warning",
                cell=cell_key(key),
                metric="redelivered",
                message=f"JetStream redelivered messages in {where}",
                evidence=f"{total:,} redeliveries in {len(redelivered)} of {len(trials)} trials "
                f"(ack_wait {ctx.setting(key, 'ack_wait') or 'the server default, 30s'})",
                advice="handlers acked after ack_wait: raise ack_wait, add workers, or lower "
                "max_ack_pending so that fewer deliveries wait for a handler",
            )
        )
    limit = ctx.setting(key, "max_ack_pending") or DEFAULT_MAX_ACK_PENDING
    peaks = [t.metrics.ack_pending_peak for t in trials if t.metrics.ack_pending_peak]
    if peaks and isinstance(limit, int) and max(peaks) >= limit:
        reached = sum(peak >= limit for peak in peaks)
        out.append(
            Anomaly(
                kind="ack_pending_limit",
                severity="info",
                cell=cell_key(key),
                metric="ack_pending_peak",
                message=f"max_ack_pending bound the deliveries of {where}",
                evidence=f"{limit:,} deliveries waited for their ack at once in {reached} of "
                f"{len(trials)} trials: the server held further messages back until handlers "
                "acked",
                advice="more workers than max_ack_pending cannot help: raise max_ack_pending "
                "(or lower workers) to find where the pool stops helping",
            )
        )
    return out


def _clock_anomalies(ctx: AnalysisContext, key: CellTuple) -> list[Anomaly]:
    """Load generators on other hosts whose clocks are too uncertain for the latencies."""
    trials = _ok_trials(ctx, key)
    worst = max(
        (u for t in trials if (u := t.metrics.clock_uncertainty_ms) is not None), default=None
    )
    p50 = ctx.median(key, "latency_p50_ms")
    if worst is None or not p50 or worst <= CLOCK_UNCERTAINTY_SHARE * p50:
        return []
    return [
        Anomaly(
            kind="clock_uncertainty",
            severity="warning",
            cell=cell_key(key),
            metric="latency_p50_ms",
            message=f"latencies of {'/'.join(key)} cross hosts whose clocks are too uncertain",
            evidence=(
                f"clock uncertainty up to {num(worst)} ms (half the best round trip to a load "
                f"host) against a median latency p50 of {num(p50)} ms: more than "
                f"{CLOCK_UNCERTAINTY_SHARE:.0%} of it"
            ),
            advice="put the load hosts closer to the coordinator on the network, or read these "
            "latencies as bounds only; throughput and counts are not affected",
        )
    ]


def host_anomalies(environment: Mapping[str, Any]) -> list[Anomaly]:
    """Load-generator hosts that ran different client libraries (environment.json)."""
    machines = (environment.get("load_generators") or {}).get("machines") or []
    if not machines:
        return []
    seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    coordinator = environment.get("machine", {}).get("hostname", "coordinator")
    for name, clients in [
        (f"{coordinator} (coordinator)", environment.get("clients") or {}),
        *(
            (f"{m.get('machine', {}).get('hostname')} ({m.get('worker')})", m.get("clients") or {})
            for m in machines
        ),
    ]:
        for client, version in clients.items():
            seen[client][str(version)].append(name)
    differing = {client: versions for client, versions in seen.items() if len(versions) > 1}
    if not differing:
        return []
    evidence = "; ".join(
        f"{client}: "
        + ", ".join(f"{version} on {', '.join(hosts)}" for version, hosts in versions.items())
        for client, versions in differing.items()
    )
    return [
        Anomaly(
            kind="client_versions",
            severity="warning",
            message="the load-generator hosts ran different client library versions",
            evidence=evidence,
            advice="install the same exprun and client versions on every host, or the "
            "shares' figures may differ for that reason alone",
        )
    ]
