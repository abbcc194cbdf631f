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
              fmt: str, limit: int) -> None:
    if fmt not in ("table", "json"):
        raise CliError("--format is table or json.", exit_code=2)
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
        query = {"filter": " AND ".join(terms), "pageSize": str(min(1000, limit - len(entries)))}
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
    table = Table(box=None, header_style="bold")
    for column in ("TIMESTAMP", "METHOD", "CALLER", "RESOURCE", "STATUS"):
        table.add_column(column)
    for entry in entries:
        payload = entry["protoPayload"]
        status = payload.get("status") or {}
        outcome = f"DENIED {status.get('message', '')}" if status.get("code") else "OK"
        table.add_row(entry["timestamp"], payload["methodName"], payload["authenticationInfo"]["principalEmail"],
                      payload["resourceName"], outcome)
    Console(width=200).print(table)
