"""Units as written in specs, and their exact round trip through JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.resolve import TrialSettings
from schemas.units import format_duration, format_size, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("1KiB", 1024), ("100MB", 100_000_000), ("1 GiB", 2**30), ("512B", 512), (64, 64)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("100us", 0.0001), ("0", 0.0), (0, 0.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["2", 2, "2d", "fast", "-1s", True, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["1KB2", "1.5B", "-3", "1TB", None])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_rates() -> None:
    assert parse_rate("unlimited") is None
    assert parse_rate(5000) == 5000.0
    assert parse_rate("2500/s") == 2500.0
    with pytest.raises(ValueError):
        parse_rate(0)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_duration_spelling_round_trips_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=2**40))
def test_size_spelling_round_trips_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_settings_survive_json() -> None:
    settings = TrialSettings.model_validate(
        {"messages": 10, "settle_time": "2s", "processing_time": "5ms", "drain_timeout": "1.5s"}
    )
    dumped = settings.model_dump_json()
    assert '"processing_time":"5ms"' in dumped
    assert TrialSettings.model_validate_json(dumped) == settings


def test_a_soak_is_written_in_hours() -> None:
    assert parse_duration("1h") == 3600.0 and parse_duration("1.5h") == 5400.0
    assert format_duration(3600.0) == "1h" and format_duration(60.0) == "1m"
