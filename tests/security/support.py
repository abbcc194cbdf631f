"""Shared checks of the security suite: error shapes, server logs, and a description of a request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Paths answering in the OAuth 2.0 error shape ({"error", "error_description"}) rather than Google's.
OAUTH_PATHS = frozenset({"/token", "/oauth2/v4/token", "/o/oauth2/token", "/tokeninfo", "/oauth2/v1/tokeninfo",
                         "/oauth2/v3/tokeninfo", "/revoke", "/o/oauth2/revoke", "/v1/token",
                         "/v1/introspect"})
# The sign-in page: its errors are shown on the page (HTML), the router's and the body limit's in Google's shape.
HTML_PATHS = frozenset({"/o/oauth2/auth", "/o/oauth2/v2/auth"})
# What a server log must never show: a traceback, or the catch-all handler's report of an unexpected exception.
LOG_ALARMS = ("Traceback (most recent call last)", "Exception in ASGI application", "internal error on ")


def is_google_error(body: Any, status: int) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    error = body["error"]
    return (error.get("code") == status and isinstance(error.get("message"), str) and bool(error["message"])
            and isinstance(error.get("status"), str) and bool(error["status"]))


def is_oauth_error(body: Any) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("error"), str) and bool(body["error"])
            and isinstance(body.get("error_description", ""), str))


def error_shape_problem(path: str, status: int, content_type: str, text: str) -> str | None:
    """None when a response is acceptable: below 500, and a 4xx carries the error shape of its surface."""
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    if path in HTML_PATHS and content_type.startswith("text/html"):
        return None
    if not content_type.startswith("application/json"):
        return f"{status} with content-type {content_type!r}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{status} with a body that is not JSON"
    if path in OAUTH_PATHS:
        # 400/401 come from the OAuth layer; the router (404/405) and the body limit (413) answer Google's shape.
        if is_oauth_error(body) or (status not in (400, 401) and is_google_error(body, status)):
            return None
        return f"{status} not in the OAuth error shape"
    if is_google_error(body, status):
        return None
    return f"{status} not in Google's error shape"


class LogWatch:
    """Reads what a server appended to its log since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new_text(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")

    def alarms(self) -> str | None:
        """The new log text (its last 4000 characters) when it shows a traceback or an internal error."""
        text = self.new_text()
        if any(alarm in text for alarm in LOG_ALARMS):
            return text[-4000:]
        return None


def describe(method: str, url: str, headers: Any, body: bytes | str | None, status: int, text: str) -> str:
    if isinstance(body, str):
        body = body.encode()
    shown = (body or b"")[:400]
    ctype = headers.get("content-type") if headers is not None else None
    return (f"{method} {url}\n    content-type: {ctype}\n    body: {shown!r}{'...' if body and len(body) > 400 else ''}"
            f"\n    -> {status}: {text[:400]}")
