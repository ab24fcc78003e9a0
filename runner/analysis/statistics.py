"""Pure statistics for exprun: summaries, variant comparisons, trend breaks and target scores.

Everything here works on plain sequences of floats and returns frozen dataclasses whose
fields are JSON-friendly (float, int, str, bool or None; never NaN), so reporters can
serialise them with `dataclasses.asdict`.

Choice of significance test (`compare`)
---------------------------------------
Benchmarks are run with few repetitions, so the test must be able to decide at small n.
The exact two-sided Mann-Whitney U test makes no distributional assumption, but its
smallest attainable p-value (perfect separation of the two samples) is 2 / C(2n, n):

    n = 3 per side -> p >= 0.1      (can never reach p < 0.05)
    n = 4 per side -> p >= 0.0286   (only with perfect separation)
    n = 5 per side -> p >= 0.0079

So, like benchstat, the U test is used from 5 samples per side. With 3-4 samples per side
Welch's t-test on log values is used instead: performance effects are multiplicative
(a change is "x% faster"), throughput and latency are right-skewed, and on the log scale
the test compares geometric means without assuming equal variances. It does assume
roughly log-normal data, which is the price of deciding at n=3. Below 3 per side there
is no test and the verdict is "insufficient data".

A change counts as significant only when p < alpha AND the relative change of the medians
is at least the noise threshold (default 2%): with tight data a 0.5% shift can be
"statistically significant" without being worth reporting as a win or a loss.

A report makes hundreds of comparisons; at alpha 0.05 one in twenty of those without a real
change still comes out significant. `compare_family` can adjust the p-values of a family
(Holm or Benjamini-Hochberg, `adjust_p_values`) and decide on the adjusted ones.
"""

from __future__ import annotations

import math
import statistics as pystats
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from schemas.goals import Goal
from schemas.metrics import Better
from schemas.report import Verdict
from schemas.spec import Correction

CI_TARGET_LEVEL = 0.95
# Run-to-run CV above this means noise swamps most optimisation effects (on a quiet machine
# broker benchmarks usually repeat within 2-5%); such cells are flagged as anomalies.
HIGH_VARIANCE_CV_PCT = 10.0
MIN_SAMPLES_FOR_TEST = 3
MIN_SAMPLES_FOR_MWU = 5
# Above this many rank permutations the tie-aware exact U test gets slow; use the normal
# approximation (with tie correction) instead.
MAX_EXACT_PERMUTATIONS = 20_000

TEST_MWU_EXACT = "Mann-Whitney U (exact)"
TEST_MWU_EXACT_TIES = "Mann-Whitney U (exact, with ties)"
TEST_MWU_ASYMPTOTIC = "Mann-Whitney U (asymptotic, ties)"
TEST_MWU_ASYMPTOTIC_NO_TIES = "Mann-Whitney U (asymptotic)"
TEST_WELCH_LOG = "Welch t-test on log values"
TEST_WELCH_RAW = "Welch t-test on raw values (non-positive data)"


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one cell; `ci_*` is a distribution-free CI of the median."""

    n: int
    median: float | None
    mean: float | None
    stdev: float | None
    min: float | None
    max: float | None
    cv_pct: float | None
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None


def _finite(values: Iterable[float], what: str) -> list[float]:
    """Values as floats; NaN/inf are refused because they would poison every statistic."""
    out = [float(v) for v in values]
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite value(s) {bad[:3]} - drop or fix them first")
    return out


def _ratio_or_none(num: float, den: float) -> float | None:
    """num/den in %, None when undefined or not representable (zero or tiny denominator)."""
    if den == 0:
        return None
    pct = num / den * 100.0
    return pct if math.isfinite(pct) else None


def median_ci(sorted_values: Sequence[float]) -> tuple[float, float, float] | None:
    """(low, high, achieved level) of the order-statistic CI of the median, None for n < 2.

    The interval [x_(k), x_(n+1-k)] covers the median with probability
    1 - 2 * P(Binomial(n, 1/2) <= k - 1). The narrowest k reaching 95% is used; when even
    [min, max] falls short (n <= 5), that widest interval is returned with its lower level.
    """
    n = len(sorted_values)
    if n < 2:
        return None
    ks = np.arange(1, (n + 1) // 2 + 1)
    levels = 1.0 - 2.0 * sps.binom.cdf(ks - 1, n, 0.5)
    reaching = np.nonzero(levels >= CI_TARGET_LEVEL)[0]
    i = int(reaching[-1]) if reaching.size else 0
    k = int(ks[i])
    return sorted_values[k - 1], sorted_values[n - k], float(levels[i])


def summarize(values: Iterable[float]) -> Summary:
    """Median, mean, sample stdev, range, CV and median CI; empty input gives n=0, all None."""
    xs = sorted(_finite(values, "summarize"))
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, None, None, None)
    mean = pystats.fmean(xs)
    stdev = pystats.stdev(xs) if n >= 2 else None
    cv = _ratio_or_none(stdev, abs(mean)) if stdev is not None else None
    ci = median_ci(xs)
    return Summary(
        n=n,
        median=pystats.median(xs),
        mean=mean,
        stdev=stdev,
        min=xs[0],
        max=xs[-1],
        cv_pct=cv,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        ci_level=ci[2] if ci else None,
    )


def high_variance(summary: Summary, threshold_pct: float = HIGH_VARIANCE_CV_PCT) -> bool:
    """True when the coefficient of variation exceeds `threshold_pct` (default 10%)."""
    return summary.cv_pct is not None and summary.cv_pct > threshold_pct


def geometric_mean(values: Iterable[float]) -> float | None:
    """Geometric mean of the positive, finite values (e.g. ratios); None if there are none."""
    logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
    return math.exp(pystats.fmean(logs)) if logs else None


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class SampleComparison:
    """Candidate vs baseline: change of the medians, test, p-value and verdict."""

    n_baseline: int
    n_candidate: int
    baseline_median: float | None
    candidate_median: float | None
    change_pct: float | None
    delta: float | None
    test: str | None
    p_value: float | None
    p_adjusted: float | None  # p_value adjusted for the family it was tested in, if asked
    significant: bool
    verdict: Verdict
    note: str | None


def _pct(x: float) -> str:
    return f"{x:.3g}%"


def _is_constant(xs: Sequence[float]) -> bool:
    return min(xs) == max(xs)


def _mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[str, float]:
    """Two-sided U test: exact when possible (tie-aware by permutation), else asymptotic."""
    ties = len(set(a) | set(b)) < len(a) + len(b)
    try:
        if not ties:
            res = sps.mannwhitneyu(a, b, alternative="two-sided", method="exact")
            return TEST_MWU_EXACT, float(res.pvalue)
        # scipy's "exact" ignores ties, and integer metrics (leaked threads, counts) tie a
        # lot: enumerate the permutations of the actual ranks instead while that is cheap.
        if math.comb(len(a) + len(b), len(a)) <= MAX_EXACT_PERMUTATIONS:
            method = sps.PermutationMethod(n_resamples=np.inf)
            res = sps.mannwhitneyu(a, b, alternative="two-sided", method=method)
            return TEST_MWU_EXACT_TIES, float(res.pvalue)
    except (ValueError, MemoryError, OverflowError):
        pass  # scipy refused the exact computation; the normal approximation always works
    res = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic")
    return (TEST_MWU_ASYMPTOTIC if ties else TEST_MWU_ASYMPTOTIC_NO_TIES), float(res.pvalue)


def _welch(a: Sequence[float], b: Sequence[float]) -> tuple[str, float]:
    """Welch's t-test on ln values, or on raw values when some value is <= 0."""
    if min(a) > 0 and min(b) > 0:
        name, xa, xb = TEST_WELCH_LOG, np.log(a), np.log(b)
    else:
        name, xa, xb = TEST_WELCH_RAW, np.asarray(a), np.asarray(b)
    with warnings.catch_warnings():
        # Nearly constant sides make scipy warn about precision; the p-value is still usable
        # for a verdict because the noise threshold, not p alone, decides significance.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(xa, xb, equal_var=False)
    return name, float(res.pvalue)


def _sizes(nb: int, nc: int) -> str:
    return f"n={nb} per side" if nb == nc else f"n={nb} vs {nc}"


def _sample_note(nb: int, nc: int) -> str:
    return (
        f"{_sizes(nb, nc)}: need at least {MIN_SAMPLES_FOR_TEST} repetitions per side "
        f"for a verdict ({MIN_SAMPLES_FOR_MWU} for Mann-Whitney U)"
    )


def _direction(delta: float, better: Better | None) -> Verdict:
    if better is None:
        return "changed"
    return "better" if (delta > 0) == (better == "higher") else "worse"


@dataclass(frozen=True)
class _Tested:
    """Both sides' medians and the test's raw p-value, before a verdict is drawn."""

    a: list[float]
    b: list[float]
    median_a: float | None
    median_b: float | None
    delta: float | None
    change: float | None
    test: str | None
    p: float | None
    notes: tuple[str, ...]
    testable: bool  # a verdict can be drawn: enough samples and no NaN p-value


def _test(baseline: Iterable[float], candidate: Iterable[float]) -> _Tested:
    a = _finite(baseline, "compare baseline")
    b = _finite(candidate, "compare candidate")
    med_a = pystats.median(a) if a else None
    med_b = pystats.median(b) if b else None
    delta = med_b - med_a if med_a is not None and med_b is not None else None
    change = _ratio_or_none(delta, abs(med_a)) if delta is not None and med_a is not None else None
    notes: list[str] = []
    if delta is not None and change is None:
        notes.append("baseline median is 0 (or tiny): relative change undefined, see delta")

    def tested(test: str | None, p: float | None, testable: bool) -> _Tested:
        return _Tested(a, b, med_a, med_b, delta, change, test, p, tuple(notes), testable)

    if delta is None or min(len(a), len(b)) < MIN_SAMPLES_FOR_TEST:
        notes.insert(0, _sample_note(len(a), len(b)))
        return tested(None, None, False)
    test: str | None
    p: float | None
    constant = _is_constant(a) and _is_constant(b)
    if constant:
        notes.insert(0, f"no variance: baseline {a[0]:g} and candidate {b[0]:g} every time")
    if constant and (delta == 0 or min(len(a), len(b)) < MIN_SAMPLES_FOR_MWU):
        # No test statistic exists: equal sides are no change; different ones are a change,
        # but no p-value is claimed for them (Welch's t is undefined without variance).
        test, p = None, (1.0 if delta == 0 else None)
    elif min(len(a), len(b)) >= MIN_SAMPLES_FOR_MWU:
        test, p = _mann_whitney(a, b)
    else:
        test, p = _welch(a, b)
        sizes = _sizes(len(a), len(b))
        notes.insert(0, f"{sizes}: Welch's t-test (Mann-Whitney U needs {MIN_SAMPLES_FOR_MWU})")
    if p is not None and math.isnan(p):
        return tested(test, None, False)
    return tested(test, p, True)


def _decide(
    t: _Tested,
    *,
    better: Better | None,
    alpha: float,
    noise_pct: float,
    p_adjusted: float | None = None,
) -> SampleComparison:
    notes = list(t.notes)
    significant = False
    verdict: Verdict = "~"
    if t.delta is None or min(len(t.a), len(t.b)) < MIN_SAMPLES_FOR_TEST:
        verdict = "insufficient data"
    elif t.testable:
        p = p_adjusted if p_adjusted is not None else t.p
        noise_ok = t.delta != 0 and (t.change is None or abs(t.change) >= noise_pct)
        decided = p < alpha if p is not None else t.delta != 0
        if decided and not noise_ok:
            shown = _pct(abs(t.change)) if t.change is not None else "0"
            notes.append(f"the change {shown} is below the {noise_pct:g}% noise threshold")
        significant = decided and noise_ok
        verdict = _direction(t.delta, better) if significant else "~"
    return SampleComparison(
        n_baseline=len(t.a),
        n_candidate=len(t.b),
        baseline_median=t.median_a,
        candidate_median=t.median_b,
        change_pct=t.change,
        delta=t.delta,
        test=t.test,
        p_value=t.p,
        p_adjusted=p_adjusted,
        significant=significant,
        verdict=verdict,
        note="; ".join(notes) or None,
    )


def compare(
    baseline: Iterable[float],
    candidate: Iterable[float],
    *,
    better: Better | None,
    alpha: float = 0.05,
    noise_pct: float = 2.0,
) -> SampleComparison:
    """Compare candidate to baseline (see the module docstring for the test choice).

    `significant` needs p < alpha and |change_pct| >= noise_pct; when the baseline median
    is 0 the relative change is undefined and any non-zero `delta` passes the noise check.
    """
    return compare_family([(baseline, candidate, better)], alpha=alpha, noise_pct=noise_pct)[0]


def compare_family(
    pairs: Sequence[tuple[Iterable[float], Iterable[float], Better | None]],
    *,
    alpha: float = 0.05,
    noise_pct: float = 2.0,
    correction: Correction = "none",
) -> list[SampleComparison]:
    """`compare` for each (baseline, candidate, better), decided on p-values adjusted for
    the whole family by `correction` (see `adjust_p_values`)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if noise_pct < 0:
        raise ValueError(f"noise_pct must be >= 0, got {noise_pct}")
    tested = [_test(a, b) for a, b, _ in pairs]
    # Only real tests make up the family: a p = 1 set for two constant, equal sides is none.
    raw = [t.p if t.testable and t.test is not None else None for t in tested]
    adjusted = adjust_p_values(raw, correction) if correction != "none" else raw
    return [
        _decide(
            t,
            better=better,
            alpha=alpha,
            noise_pct=noise_pct,
            p_adjusted=q if correction != "none" else None,
        )
        for t, q, (_, _, better) in zip(tested, adjusted, pairs, strict=True)
    ]


def adjust_p_values(p_values: Sequence[float | None], method: Correction) -> list[float | None]:
    """p-values adjusted for the number of tests made together; None (no test) stays None.

    holm: Holm-Bonferroni step-down, bounds the chance of any false "significant" (FWER).
    bh: Benjamini-Hochberg, bounds the expected share of false ones among them (FDR).
    """
    found = [(i, p) for i, p in enumerate(p_values) if p is not None]
    out = list(p_values)
    if method == "none" or not found:
        return out
    ps = np.array([p for _, p in found], dtype=float)
    if method == "bh":
        adjusted = sps.false_discovery_control(ps, method="bh")
    else:
        adjusted = np.empty_like(ps)
        running = 0.0
        for rank, index in enumerate(np.argsort(ps, kind="stable")):
            running = max(running, min(1.0, (len(ps) - rank) * ps[index]))
            adjusted[index] = running
    for (i, _), q in zip(found, adjusted, strict=True):
        out[i] = float(q)
    return out


# --------------------------------------------------------------------------- trend breaks


@dataclass(frozen=True)
class TrendBreak:
    """A scenario whose value falls outside its neighbours' range by more than `factor`."""

    scenario: str
    value: float
    direction: Literal["below", "above"]
    ratio: float
    factor: float
    prev_scenario: str
    prev_value: float
    next_scenario: str
    next_value: float
    evidence: str


def _break_at(points: Sequence[tuple[str, float]], i: int, factor: float) -> TrendBreak | None:
    """The trend break at interior index `i`, if its value misses its neighbours' range."""
    (pname, pv), (name, v), (nname, nv) = points[i - 1], points[i], points[i + 1]
    if not all(math.isfinite(x) and x > 0 for x in (pv, v, nv)):
        return None
    lo, hi = min(pv, nv), max(pv, nv)
    direction: Literal["below", "above"]
    if v * factor < lo:
        direction, ratio = "below", lo / v
    elif v > hi * factor:
        direction, ratio = "above", v / hi
    else:
        return None
    if not math.isfinite(ratio):
        return None  # only for denormal values, never for real measurements
    evidence = (
        f"{name} {v:g} is {ratio:.1f}x {direction} the range of its neighbours "
        f"{pname} {pv:g} and {nname} {nv:g} (threshold {factor:g}x)"
    )
    return TrendBreak(name, v, direction, ratio, factor, pname, pv, nname, nv, evidence)


def trend_breaks(points: Sequence[tuple[str, float]], *, factor: float = 2.0) -> list[TrendBreak]:
    """Interior points that break the scenario trend, in scenario order.

    Scenarios grow in size, so a metric should move roughly monotonically, or at least stay
    near its neighbours. A point is flagged when it lies below min(prev, next) / factor or
    above max(prev, next) * factor; `ratio` says by how many times it misses that range.
    One outlier also pushes its neighbour out of line (a dip makes the point before it look
    like a spike), so of two adjacent flagged points only the larger ratio is kept.
    The first and last points have one neighbour and are never flagged. Triples with a
    value <= 0 (or non-finite) are skipped: ratios are meaningless there, and zero counts
    such as leaks are flagged by their own rules.
    """
    if factor < 1.0:
        raise ValueError(f"factor must be >= 1, got {factor}")
    candidates = {i: b for i in range(1, len(points) - 1) if (b := _break_at(points, i, factor))}
    kept: dict[int, TrendBreak] = {}
    for i, brk in sorted(candidates.items(), key=lambda item: -item[1].ratio):
        if i - 1 not in kept and i + 1 not in kept:
            kept[i] = brk
    return [kept[i] for i in sorted(kept)]


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class GoalScore:
    """How far a target was reached: `achievement_pct` 100 means exactly on target."""

    goal: str
    actual: float | None
    achievement_pct: float | None
    passed: bool
    note: str | None


def _ratio_pct(num: float, den: float) -> float:
    """num/den in %, 0 when the ratio is meaningless (zero or mixed signs)."""
    return num / den * 100.0 if num > 0 and den > 0 else 0.0


def _absolute_achievement(goal: Goal, actual: float, passed: bool) -> float:
    """100 when passed; otherwise how close the value came, on a 0..100 scale."""
    if passed:
        return 100.0
    if goal.op in ("<=", "<"):
        return _ratio_pct(goal.value, actual)
    if goal.op in (">=", ">"):
        return _ratio_pct(actual, goal.value)
    return _ratio_pct(min(actual, goal.value), max(actual, goal.value))


def score_target(
    goal: Goal,
    *,
    actual_change_pct: float | None = None,
    actual_value: float | None = None,
) -> GoalScore:
    """Score a target: relative goals use `actual_change_pct`, absolute ones `actual_value`.

    Relative: achievement = actual change / goal change * 100 (+152.7% vs +400% -> 38.2%),
    signed, so a change in the wrong direction scores below 0. Absolute: 100 when passed,
    else goal/actual*100 for "<"/"<=", actual/goal*100 for ">"/">=", the smaller over the
    larger for "=="; 0 where that ratio would divide by zero or mix signs.
    A missing actual (e.g. no baseline) scores as not passed with a note.
    """
    actual = actual_change_pct if goal.is_relative else actual_value
    if actual is None or not math.isfinite(actual):
        kind = "relative change" if goal.is_relative else "value"
        return GoalScore(str(goal), None, None, False, f"no {kind} to score")
    passed = goal.holds(actual)
    if not goal.is_relative:
        achievement = _absolute_achievement(goal, actual, passed)
    elif goal.value != 0:
        achievement = actual / goal.value * 100.0
    else:
        # "keep it unchanged"-style goals (e.g. "<= 0%") have no scale to divide by.
        achievement = 100.0 if passed else 0.0
    return GoalScore(str(goal), actual, achievement, passed, None)


def overall_score(passed: Sequence[bool]) -> str:
    """Passed targets as "k/n (p%)", e.g. "5/7 (71.4%)"; "0/0 (n/a)" without targets."""
    n = len(passed)
    if n == 0:
        return "0/0 (n/a)"
    k = sum(passed)
    return f"{k}/{n} ({k / n * 100:.1f}%)"
