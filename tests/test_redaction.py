"""Secrets from ${ENV} references are masked wherever they sit in nested data."""

from __future__ import annotations

from runner.redaction import MASK, redact, redact_data


def test_longest_secret_is_masked_whole() -> None:
    assert redact("pw=hunter2-long, short=hunter2", ["hunter2", "hunter2-long"]) == (
        f"pw={MASK}, short={MASK}"
    )


def test_nested_data_keys_and_values_are_masked() -> None:
    data = {
        "config": {"sasl.password": "s3cret", "s3cret-key": ["a", "x s3cret y", 5]},
        "errors": ("failed with s3cret",),
        "count": 3,
        "none": None,
    }
    assert redact_data(data, ["s3cret"]) == {
        "config": {"sasl.password": MASK, f"{MASK}-key": ["a", f"x {MASK} y", 5]},
        "errors": (f"failed with {MASK}",),
        "count": 3,
        "none": None,
    }


def test_no_secrets_returns_the_data_itself() -> None:
    data = {"a": ["b"]}
    assert redact_data(data, []) is data
