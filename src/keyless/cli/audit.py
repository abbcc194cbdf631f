"""``keyless audit``: read the audit log as a table or as JSON lines."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from typing import Any

from rich.console import Console
from rich.table import Table

from keyless.cli.client import CliError, Session

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")  # ASCII digits: "\d" also takes "٣"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAMED_BY_EMAIL = re.compile(r"projects/[^/]+/serviceAccounts/([^/]+@[^/]+(?:/.*)?)")


def since_timestamp(text: str, now: dt.datetime | None = None) -> str:
    """``15m`` / ``2h`` / ``1d`` back from now, or an RFC 3339 time, as RFC 3339."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        now = now or dt.datetime.now(dt.UTC)
        try:
            when = now - dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        except OverflowError:  # before the year 1: everything
            return "0001-01-01T00:00:00Z"
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--since takes an RFC 3339 time or a duration like 15m, not {text!r}.", exit_code=2) \
            from None
    return text


def run_audit(session: Session, *, account: str | None, caller: str | None, since: str | None, denied: bool,
              fmt: str, limit: int, order: str = "desc") -> None:
    if fmt not in ("table", "json"):
        raise CliError("--format is table or json.", exit_code=2)
    if order not in ("desc", "asc"):
        raise CliError("--order is desc (newest first) or asc.", exit_code=2)
    terms = []
    if account:
        terms.append(f'account="{account}"')
    if caller:
        terms.append(f'caller="{caller.split(":", 1)[-1]}"')
    if since:
        terms.append(f'timestamp>="{since_timestamp(since)}"')
    if denied:
        terms.append("denied=true")
    entries: list[dict[str, Any]] = []
    token = ""
    while len(entries) < limit:
        query = {"filter": " AND ".join(terms), "pageSize": str(min(1000, limit - len(entries))),
                 "orderBy": f"timestamp {order}"}
        if token:
            query["pageToken"] = token
        page = session.call("GET", "/v1/auditLog?" + urllib.parse.urlencode(query))
        entries.extend(page.get("entries", []))
        token = page.get("nextPageToken", "")
        if not token:
            break
    if fmt == "json":
        for entry in entries:
            print(json.dumps(entry, separators=(",", ":")))
        return
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
    for column in ("TIMESTAMP", "METHOD", "CALLER", "RESOURCE", "STATUS", "WHY"):
        # One line per entry, however long (the WHY of a denial names emails and roles): never wrapped.
        table.add_column(column, no_wrap=True, overflow="ignore")
    for entry in entries:
        payload = entry["protoPayload"]
        status = payload.get("status") or {}
        table.add_row(entry["timestamp"], payload["methodName"], payload["authenticationInfo"]["principalEmail"],
                      shown_resource(entry), "DENIED" if status.get("code") else "OK", why(entry))
    console = Console(width=1 << 14, soft_wrap=True)
    with console.capture() as capture:
        console.print(table)
    print("".join(line.rstrip() + "\n" for line in capture.get().splitlines()), end="")


def shown_resource(entry: dict[str, Any]) -> str:
    """The entry's resource with a service account named by its email: for its unique id, the email of
    ``resource.labels.email_id``; an email the request named (an account that is not there), as it was named."""
    name = str(entry["protoPayload"].get("resourceName", ""))
    labels = (entry.get("resource") or {}).get("labels") or {}
    email, unique_id = labels.get("email_id"), labels.get("unique_id")
    prefix = f"projects/-/serviceAccounts/{unique_id}"
    if email and unique_id and (name == prefix or name.startswith(prefix + "/")):
        return str(email) + name[len(prefix):]
    named = _NAMED_BY_EMAIL.fullmatch(name)
    return named.group(1) if named else name


def why(entry: dict[str, Any]) -> str:
    """Why a denial happened, as the owner reads it (``protoPayload.metadata.explanation``), else what the
    caller was told."""
    payload = entry["protoPayload"]
    explanation = (payload.get("metadata") or {}).get("explanation") or {}
    if explanation.get("summary"):
        return str(explanation["summary"])
    status = payload.get("status") or {}
    return str(status.get("message", "")) if status.get("code") else ""
