"""The columns, row mappers and statements both SQL backends share (storage/rows.py) agree with each other."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import pytest

from keyless.storage import rows
from keyless.storage.base import AuthorizationCode, KeyRecord, OrgPolicy, Project, ServiceAccount, SignInGrant, User

RECORDS: list[tuple[Any, Any, Any, str]] = [
    (Project("p", "123", 1.5), rows.project_row, rows.as_project, rows.PROJECT_COLUMNS),
    (ServiceAccount("1", "p", "a", "a@p.iam.gserviceaccount.com", "A", "d", True, 2.0, 1.0, 3.0),
     rows.service_account_row, rows.as_service_account, rows.SERVICE_ACCOUNT_COLUMNS),
    (KeyRecord("k", "1", "USER_MANAGED", "GOOGLE_PROVIDED", b"cert", b"enc", 1.0, 2.0, 0.5, True, 3.0, None),
     rows.key_row, rows.as_key, rows.KEY_COLUMNS),
    (KeyRecord("k", "issuer", "SYSTEM_MANAGED", "USER_PROVIDED", b"cert", None, 1.0, 2.0, 0.5),
     rows.key_row, rows.as_key, rows.KEY_COLUMNS),
    (User("u", "u@example.com", "c", "sh", "rh", 1.0, True, "ph"), rows.user_row, rows.as_user, rows.USER_COLUMNS),
    (AuthorizationCode("h", "c", "http://localhost:1/", "ch", "u", ("openid", "email"), 1.0, 2.0, True, "n"),
     rows.code_row, rows.as_code, rows.CODE_COLUMNS),
    (SignInGrant("g", "u", "c", ("openid",), "rh", 1.0), rows.grant_row, rows.as_grant, rows.GRANT_COLUMNS),
    (OrgPolicy("projects/p", "iam.disableServiceAccountKeyCreation", {"rules": [{"enforce": True}]}, "e", 1.0),
     rows.org_policy_row, rows.as_org_policy, rows.ORG_POLICY_COLUMNS),
]


@pytest.mark.parametrize(("record", "to_row", "from_row", "columns"), RECORDS)
def test_a_record_comes_back_from_its_row(record: Any, to_row: Any, from_row: Any, columns: str) -> None:
    row = to_row(record)
    assert len(row) == len(columns.split(","))
    assert from_row(row) == record
    # SQLite hands booleans back as 0/1; the record has bools again.
    as_stored = tuple(int(v) if isinstance(v, bool) else v for v in row)
    assert from_row(as_stored) == record


def _numbers(sql: str, mark: str) -> list[int]:
    return [int(n) for n in re.findall(re.escape(mark) + r"(\d+)", sql)]


def test_sqlite_statements_bind_the_same_positions_as_postgres_ones() -> None:
    for field in fields(rows.Statements)[1:]:
        postgres, sqlite = getattr(rows.POSTGRES, field.name), getattr(rows.SQLITE, field.name)
        assert "$" not in sqlite, field.name
        assert _numbers(sqlite, "?") == _numbers(postgres, "$"), field.name
        # Parameters are numbered 1..n, each used.
        assert set(_numbers(postgres, "$")) == set(range(1, max(_numbers(postgres, "$"), default=0) + 1)), field.name
    assert rows.SQLITE.update("keys", "key_id", ["disabled", "retired_at"]) == (
        "UPDATE keys SET disabled=?2, retired_at=?3 WHERE key_id=?1")
    assert rows.POSTGRES.update("keys", "key_id", ["disabled"]) == "UPDATE keys SET disabled=$2 WHERE key_id=$1"
