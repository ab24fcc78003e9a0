"""A paced trial that fell short of its rate, and the cause it can see.

A harness limit reported as a broker result is the worst bug this product can have: a trial
more than 5% below its declared rate says so, with what held it back. Used by the trial
process (its note) and by the analysis (the report's finding), so both say the same.
"""

from __future__ import annotations

from schemas.results import Metrics

SHORTFALL = 0.05  # achieved more than this far below the declared rate
OUT_OF_CPU_PCT = 90.0  # a load-generator process this busy (% of one core) is the limit
BACKPRESSURE_PCT = 10.0  # producers waiting for the broker this much of the publishing time


def falls_short(achieved: float | None, rate: float | None) -> bool:
    return rate is not None and achieved is not None and achieved < rate * (1 - SHORTFALL)


def shortfall_cause(metrics: Metrics) -> str:
    """What held a paced trial below its rate, as far as the trial can see."""
    cpu, blocked = metrics.loadgen_cpu_percent, metrics.publish_blocked_pct
    causes = []
    if cpu is not None and cpu >= OUT_OF_CPU_PCT:
        causes.append(
            f"the load generator was out of CPU (its busiest process used {cpu:.0f}% of a "
            "core): a harness limit, not the broker's"
        )
    if blocked is not None and blocked >= BACKPRESSURE_PCT:
        causes.append(
            f"publish backpressure from the broker (producers waited {blocked:.0f}% of the "
            "time for a free in-flight slot or for acks)"
        )
    if causes:
        return "; ".join(causes)
    return (
        f"no cause visible (load generator at {cpu or 0:.0f}% of a core, producers waiting for "
        f"the broker {blocked or 0:.0f}% of the time)"
    )
