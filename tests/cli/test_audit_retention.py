"""``keyless serve --audit-retention-days``: a real server deletes the entries older than the retention."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import KEYLESS, Server, start_server

# About 0.4 s: the first server's entries are older than that by the time the second one has started.
RETENTION_DAYS = "0.000005"


def _entry_ids(server: Server) -> list[str]:
    return [e["insertId"] for e in server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]]


def test_a_server_with_a_retention_deletes_older_entries(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data")
    try:
        email = first.create_sa("retention-target")
        for _ in range(3):  # the owner may not mint for it: three refusals, three entries
            first.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                        {"scope": ["https://www.googleapis.com/auth/cloud-platform"]}, expect=403)
        old = _entry_ids(first)
    finally:
        first.stop()
    assert len(old) >= 4

    second = start_server(tmp_path / "data", "--audit-retention-days", RETENTION_DAYS)
    try:
        deadline = time.monotonic() + 30
        # Pruning starts once the server is up; the newest entry is always kept.
        while len(set(old) & set(_entry_ids(second))) > 1:
            assert time.monotonic() < deadline, "old audit entries were not deleted"
            time.sleep(0.05)
        assert set(_entry_ids(second)) & set(old) <= {old[-1]}
    finally:
        second.stop()


def test_a_negative_retention_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([*KEYLESS, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                           "--audit-retention-days", "-1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--audit-retention-days" in proc.stderr
    assert not (tmp_path / "data" / "keyless.db").exists()
