"""What a fault cost the producers, from acks per 10 ms bucket (pure)."""

from __future__ import annotations

import pytest

from runner.execution.measure.availability import (
    BUCKET_NS,
    AckTimeline,
    Recovery,
    longest_silence,
    recovery,
)


def recovery_s(counts: list[int], fault: int) -> float | None:
    return recovery(counts, fault).seconds


STEADY = [10] * 300  # 3 s at 1000 acks/s


def test_an_outage_is_the_longest_silence_and_recovery_follows_it() -> None:
    counts = STEADY + [0] * 200 + STEADY
    silence = longest_silence(counts)
    assert silence is not None and (silence.seconds, silence.start_s) == (2.0, 3.0)
    assert recovery_s(counts, fault=300) == pytest.approx(2.0, abs=0.1)  # a tenth of a window


def test_no_disruption_recovers_at_once() -> None:
    counts = STEADY * 3
    assert recovery_s(counts, fault=300) == 0.0
    silence = longest_silence(counts)
    assert silence is not None and silence.seconds == 0.0


def test_a_catch_up_burst_is_back_when_the_acks_resume_not_before() -> None:
    counts = STEADY + [0] * 200 + [20] * 50 + STEADY
    assert recovery_s(counts, fault=300) == pytest.approx(2.0, abs=0.1)


def test_a_burst_of_retries_does_not_make_up_for_a_second_that_is_not_back() -> None:
    # The acks resume with every retried message at once, then run at half the usual rate.
    counts = STEADY + [0] * 200 + [300] * 5 + [5] * 300
    back = recovery(counts, fault=300)
    assert back.seconds is None
    assert back.why_not == "not recovered within 5.0 s of the fault (publishing ended)"


def test_a_slow_return_is_back_once_a_full_second_is() -> None:
    ramp = [index // 10 for index in range(100)]  # 0 -> 9 acks per bucket over 1 s
    counts = STEADY + [0] * 100 + ramp + STEADY
    recovered = recovery_s(counts, fault=300)
    assert recovered is not None and 1.4 < recovered < 2.0


def test_throughput_that_stays_low_never_recovers() -> None:
    assert recovery_s(STEADY + [5] * 300, fault=300) is None


def test_no_acks_after_a_fault_run_to_the_end_of_publishing() -> None:
    silence = longest_silence(STEADY, until=450)
    assert silence is not None and silence.seconds == 1.51 and silence.start_s == 3.0
    assert recovery_s(STEADY + [0] * 150, fault=300) is None
    # Acks that resume less than a second before publishing ended cannot show a full second.
    back = recovery(STEADY + [0] * 500 + [10] * 60, fault=300, end=900)
    assert back == Recovery(None, "not recovered within 6.0 s of the fault (publishing ended)")


def test_recovery_needs_a_full_window_before_the_fault() -> None:
    assert recovery(STEADY, fault=50).why_not == (
        "no full second of publishing before the fault to compare with"
    )
    # Most of the seconds before this fault were an earlier fault's outage.
    assert recovery(STEADY[:100] + [0] * 400 + STEADY, fault=500).why_not == (
        "no acked throughput to compare with: most seconds before the fault had none"
    )
    assert longest_silence([]) is None


def test_timelines_add_and_merge_exactly() -> None:
    origin = 1_000_000_000
    first, second = AckTimeline(origin), AckTimeline(origin)
    for at in (origin, origin + 5 * BUCKET_NS, origin + 5 * BUCKET_NS + 1):
        first.add(at)
    second.add(origin + 9 * BUCKET_NS)
    second.add(origin - 1)  # before the origin: the first bucket
    first.merge(AckTimeline.of_bytes(second.counts.tobytes()).counts)
    assert list(first.counts) == [2, 0, 0, 0, 0, 2, 0, 0, 0, 1]
    assert first.bucket_of(origin + 5 * BUCKET_NS) == 5
