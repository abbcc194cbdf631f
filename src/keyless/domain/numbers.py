"""Integers from callers: ASCII digits only, and bounded before they are converted.

Python's ``str.isdigit()`` and ``int()`` accept every Unicode digit (``int("٣٦٠٠") == 3600``), ``int()`` also
takes surrounding whitespace, a sign and underscores (``int(" +1_0 ") == 10``), and it raises instead of
converting a string of more than 4300 digits. A number a caller sends is checked here first."""

from __future__ import annotations

from keyless.errors import InvalidArgument

# 18 digits always fit a signed 64-bit integer (database columns, JSON consumers).
MAX_DIGITS = 18


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty string of the characters 0-9 only."""
    return text.isascii() and text.isdigit()


def parse_count(raw: object, *, field: str, wire: str, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative integer sent as a JSON integer or a string of ASCII digits (query parameters, proto3 JSON
    int64); None when absent (None or ""). Anything else is 400 INVALID_ARGUMENT naming ``wire``."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if 0 <= raw < 10**max_digits:
            return raw
    elif isinstance(raw, str) and len(raw) <= max_digits and is_ascii_digits(raw):
        return int(raw)
    if (isinstance(raw, int) and not isinstance(raw, bool) and raw < 0) or (
            isinstance(raw, str) and raw.startswith("-") and is_ascii_digits(raw[1:])):
        raise InvalidArgument(f"{wire} must not be negative.", field=field)
    raise InvalidArgument(f"Invalid value at '{wire}': {shown(raw)} is not a non-negative integer.", field=field)


def shown(value: object, limit: int = 40) -> str:
    """A caller's value quoted for an error message, cut short (repr of a huge int raises; long text is noise)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return "a number that is too large"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
