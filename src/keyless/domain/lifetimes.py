"""Durations, timestamps and the lifetime limits of short-lived credentials."""

from __future__ import annotations

import datetime as dt
import functools
import re
import time

from keyless.errors import InvalidArgument

DEFAULT_LIFETIME = 3600
MAX_LIFETIME = 3600
MAX_EXTENDED_LIFETIME = 43200
LIFETIME_EXTENSION_CONSTRAINT = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"
# ASCII digits only ("\d" also matches "٣"), and the whole string ("$" would allow a trailing newline).
_DURATION_RE = re.compile(r"(-?)([0-9]{1,12})(?:\.([0-9]{1,9}))?s")


def parse_duration(value: object, *, field: str) -> float:
    """A proto3 JSON Duration: ``"3600s"``, ``"1.5s"``."""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration): "
                              f"expected a string such as \"3600s\".", field=field)
    m = _DURATION_RE.fullmatch(value)
    if not m:
        raise InvalidArgument(f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration), "
                              f"Field '{field}', Illegal duration format; duration must end with 's'", field=field)
    seconds = int(m.group(2)) + (int((m.group(3) or "0").ljust(9, "0")) / 1e9)
    return -seconds if m.group(1) else seconds


def check_lifetime(seconds: float, *, extended_allowed: bool) -> int:
    """The lifetime in whole seconds for ``generateAccessToken``; refuse what the limits forbid."""
    limit = MAX_EXTENDED_LIFETIME if extended_allowed else MAX_LIFETIME
    if seconds <= 0:
        raise InvalidArgument("The lifetime must be a positive duration.", field="lifetime")
    if seconds > limit:
        value = f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
        if seconds <= MAX_EXTENDED_LIFETIME:
            raise InvalidArgument(
                f"Lifetime {value} exceeds the maximum of {MAX_LIFETIME}s. A lifetime of up to "
                f"{MAX_EXTENDED_LIFETIME}s requires the service account to be listed in the organization policy "
                f"constraint {LIFETIME_EXTENSION_CONSTRAINT}.",
                field="lifetime",
            )
        raise InvalidArgument(f"Lifetime {value} exceeds the maximum of {limit}s.", field="lifetime")
    return max(1, int(seconds))


def format_timestamp(epoch: float) -> str:
    """RFC 3339 UTC with whole seconds and a literal ``Z`` (google-auth rejects fractions)."""
    return format_second(int(epoch))


@functools.lru_cache(maxsize=4096)
def format_second(second: int) -> str:
    """``format_timestamp`` of a whole second, remembered: every token response and audit entry formats "now"
    (and now + a lifetime), the same few seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def parse_timestamp(value: str) -> float:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_bool(value: object, *, field: str) -> bool:
    """A JSON boolean, or the quoted ``"true"``/``"false"`` some Google clients send."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(f"Invalid value at '{field}' (TYPE_BOOL), \"{value}\"", field=field)
