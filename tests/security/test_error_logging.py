"""An unexpected exception answers a generic 500 and logs one line naming its type, never a traceback.

The fault is real: a table of the server's live SQLite database is renamed under it (as a broken migration or a
hand edit would leave it), so the store raises on the next query. Each kind of route is covered: one Starlette
routes, one the edge calls directly, and a credential verb whose audit entry cannot be stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import CLOUD, Server, start_server
from tests.http.helpers import TOKEN_CREATOR
from tests.security.support import LogWatch, is_google_error


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "data")
    yield server
    server.stop()


def break_table(server: Server, prefix: str) -> None:
    """Rename every table whose name starts with ``prefix`` in the server's database."""
    db = sqlite3.connect(server.data_dir / "keyless.db", timeout=30)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ?",
                                          (f"{prefix}%",))]
        assert names, prefix
        for name in names:
            db.execute(f'ALTER TABLE "{name}" RENAME TO "{name}_gone"')
        db.commit()
    finally:
        db.close()


def assert_logged_once(watch: LogWatch, path: str) -> None:
    text = watch.new_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text
    lines = [line for line in text.splitlines() if "internal error on" in line]
    assert len(lines) == 1, text
    assert path in lines[0] and lines[0].rstrip().endswith("OperationalError"), lines[0]
    # The exception's text ("no such table: ...") may hold request data: only its type is logged.
    assert "no such table" not in text, text


def assert_internal(r: requests.Response) -> None:
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert is_google_error(r.json(), 500) and r.json()["error"]["status"] == "INTERNAL", r.text
    assert "no such table" not in r.text


def test_an_unexpected_exception_logs_its_type_only(srv: Server) -> None:
    email = srv.create_sa("logged-one")
    srv.grant(email, "user:owner@keyless.local", TOKEN_CREATOR)
    headers = {"Authorization": f"Bearer {srv.owner_token}"}
    watch = LogWatch(srv.data_dir / "server.log")

    # Starlette's router (the Org Policy routes).
    break_table(srv, "org_policies")
    path = "/v2/projects/keyless-dev/policies"
    assert_internal(requests.get(f"{srv.url}{path}", headers=headers, timeout=30))
    assert_logged_once(watch, path)

    # A route the edge calls directly (POST under /v1/projects/.../serviceAccounts/...).
    break_table(srv, "keys")
    path = f"/v1/projects/-/serviceAccounts/{email}/keys"
    assert_internal(requests.post(f"{srv.url}{path}", json={}, headers=headers, timeout=30))
    assert_logged_once(watch, path)

    # A credential verb whose audit entry cannot be stored: no token is released, and one line is logged.
    break_table(srv, "audit_log")
    path = f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
    r = requests.post(f"{srv.url}{path}", json={"scope": [CLOUD]}, headers=headers, timeout=30)
    assert_internal(r)
    assert "accessToken" not in r.text
    assert_logged_once(watch, path)
