"""Durations, timestamps, booleans and the lifetime limits of generateAccessToken."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.lifetimes import (
    DEFAULT_LIFETIME,
    MAX_EXTENDED_LIFETIME,
    MAX_LIFETIME,
    check_lifetime,
    format_timestamp,
    parse_bool,
    parse_duration,
    parse_timestamp,
)
from keyless.errors import InvalidArgument


def _resolve(value: object, *, extended_allowed: bool) -> int:
    """A request's lifetime as the REST adapter and the core take it: the Duration parsed, then checked."""
    if value is None or value == "":
        return DEFAULT_LIFETIME
    return check_lifetime(parse_duration(value, field="lifetime"), extended_allowed=extended_allowed)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0s", 0.0), ("1s", 1.0), ("3600s", 3600.0), ("1.5s", 1.5), ("0.000000001s", 1e-9), ("-2s", -2.0),
    ("-0.25s", -0.25), ("43200s", 43200.0), ("999999999999s", 999999999999.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text, field="lifetime") == pytest.approx(seconds)


@pytest.mark.parametrize("value", [
    "3600", "1h", "60m", "s", "", " 3600s", "3600s ", "3600S", "1.s", ".5s", "1.0000000001s", "+5s", "1e3s",
    "3600ss", "PT1H", "1,5s", 3600, 3600.0, None, True, ["3600s"], {"seconds": 3600},
])
def test_parse_duration_rejects_other_forms(value: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(value, field="lifetime")
    assert info.value.field == "lifetime"


@pytest.mark.parametrize("value", [None, ""])
def test_default_lifetime(value: Any) -> None:
    assert _resolve(value, extended_allowed=False) == DEFAULT_LIFETIME == 3600
    assert _resolve(value, extended_allowed=True) == DEFAULT_LIFETIME


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1), ("600s", 600), ("3599.9s", 3599), ("3600s", 3600),
                                                ("3600.0s", 3600), ("0.5s", 1)])
def test_lifetimes_within_the_limit(value: str, seconds: int) -> None:
    assert _resolve(value, extended_allowed=False) == seconds
    assert _resolve(value, extended_allowed=True) == seconds


@pytest.mark.parametrize("value", ["3600.5s", "3601s", "7200s", "43200s"])
def test_long_lifetimes_need_the_extension(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _resolve(value, extended_allowed=False)
    assert info.value.field == "lifetime"
    assert "constraints/iam.allowServiceAccountCredentialLifetimeExtension" in info.value.message
    assert _resolve(value, extended_allowed=True) == int(float(value[:-1]))


@pytest.mark.parametrize("value", ["43200.5s", "43201s", "86400s", "999999999999s"])
def test_lifetimes_beyond_twelve_hours_are_always_refused(value: str) -> None:
    for extended in (False, True):
        with pytest.raises(InvalidArgument):
            _resolve(value, extended_allowed=extended)


@pytest.mark.parametrize("value", ["0s", "-1s", "-3600s", "0.0s"])
def test_non_positive_lifetimes_are_refused(value: str) -> None:
    with pytest.raises(InvalidArgument):
        _resolve(value, extended_allowed=True)


@pytest.mark.parametrize("value", [3600, "3600", "1h", True, [], {}])
def test_malformed_lifetimes_are_refused(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        _resolve(value, extended_allowed=False)


def test_limits() -> None:
    assert MAX_LIFETIME == 3600
    assert MAX_EXTENDED_LIFETIME == 43200


@pytest.mark.parametrize(("epoch", "text"), [
    (0, "1970-01-01T00:00:00Z"), (1_800_000_000, "2027-01-15T08:00:00Z"), (1_800_000_000.999, "2027-01-15T08:00:00Z"),
    (951_782_400, "2000-02-29T00:00:00Z"), (4_102_444_799, "2099-12-31T23:59:59Z"),
])
def test_format_timestamp(epoch: float, text: str) -> None:
    assert format_timestamp(epoch) == text


@pytest.mark.parametrize(("text", "epoch"), [
    ("2027-01-15T08:00:00Z", 1_800_000_000.0), ("2027-01-15T08:00:00z", 1_800_000_000.0),
    ("2027-01-15T09:00:00+01:00", 1_800_000_000.0), ("2027-01-15T08:00:00", 1_800_000_000.0),
    ("2027-01-15T08:00:00.5Z", 1_800_000_000.5), (" 1970-01-01T00:00:00Z ", 0.0),
])
def test_parse_timestamp(text: str, epoch: float) -> None:
    assert parse_timestamp(text) == epoch


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), (None, False), ("true", True), ("false", False), ("TRUE", True), ("False", False),
])
def test_parse_bool(value: Any, expected: bool) -> None:
    assert parse_bool(value, field="includeEmail") is expected


@pytest.mark.parametrize("value", ["yes", "1", "0", "", 1, 0, [], {}, "t"])
def test_parse_bool_rejects_other_values(value: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_bool(value, field="includeEmail")
    assert info.value.field == "includeEmail"
