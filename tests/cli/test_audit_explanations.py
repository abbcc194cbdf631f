"""``keyless audit`` tells the owner why each denial happened, newest first, naming accounts by email; the
caller's answer stays Google's one 403, the same for a typo, a missing role and a condition that evaluated
false. A real server, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from tests.cli.support import kl
from tests.conftest import CLOUD, Server

ALICE = "alice@example.com"
TARGET = "target-sa@keyless-dev.iam.gserviceaccount.com"
TYPO = "traget-sa@keyless-dev.iam.gserviceaccount.com"
OFFICE = "office-sa@keyless-dev.iam.gserviceaccount.com"
OFFICE_HOURS = {"title": "office-hours", "expression": 'request.time < timestamp("2000-01-01T00:00:00Z")'}
# (Not "roles/": the CLI's own advice on a failed impersonation names the token creator role, as gcloud's does.)
OWNER_ONLY = ("did you mean", "office-hours", "evaluated false", "roles that would", "no binding", "no account",
              "explanation", "workloadIdentityUser")


def _mint(server: Server, token: str, email: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                         json={"scope": [CLOUD]}, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _as_alice(server: Server, alice: Path, *args: str, expect: int) -> str:
    proc = kl(server, "--credential-file", str(alice), *args, expect=expect)
    text = proc.stdout + proc.stderr
    assert all(owner_only not in text for owner_only in OWNER_ONLY), text
    return text


def test_keyless_audit_says_which_denial_it_was(fresh_server: Server, tmp_path: Path) -> None:
    server = fresh_server
    assert server.create_sa("target-sa") == TARGET
    assert server.create_sa("office-sa") == OFFICE
    server.grant(OFFICE, f"user:{ALICE}", condition=OFFICE_HOURS)
    alice = tmp_path / "alice.json"
    kl(server, "users", "add", ALICE, "--output", str(alice))

    # The caller: one answer, byte for byte, whichever the cause (naming the account as it was named).
    token = server.user_token(alice)
    answers: list[Any] = []
    for named in (TYPO, TARGET, OFFICE):
        r = _mint(server, token, named)
        assert r.status_code == 403
        assert all(owner_only not in r.text for owner_only in OWNER_ONLY), r.text
        answers.append((r.headers["content-type"], r.content.replace(named.encode(), b"{ACCOUNT}")))
    assert answers[0] == answers[1] == answers[2]
    shown = [_as_alice(server, alice, "--impersonate-service-account", named, "auth", "print-access-token",
                       expect=1).replace(named, "{ACCOUNT}") for named in (TYPO, TARGET, OFFICE)]
    assert shown[0] == shown[1] == shown[2]
    # Only the owner reads the audit log.
    assert "PERMISSION_DENIED" in _as_alice(server, alice, "audit", expect=1)

    # The owner: newest first, accounts by email, and why.
    table = kl(server, "audit", "--denied").stdout.splitlines()
    assert table[0].split() == ["TIMESTAMP", "METHOD", "CALLER", "RESOURCE", "STATUS", "WHY"]
    minted = [line for line in table if "GenerateAccessToken" in line]
    assert len(minted) == 6  # over REST, then through the CLI: the CLI's three come first
    office, target, typo = minted[:3]
    assert f" {OFFICE} " in office and "condition 'office-hours' evaluated false" in office
    assert f" {TARGET} " in target and (
        f"no binding grants iam.serviceAccounts.getAccessToken to user:{ALICE} on {TARGET} (roles that would: "
        "roles/iam.serviceAccountTokenCreator, roles/iam.workloadIdentityUser)") in target
    assert f" {TYPO} " in typo and typo.endswith(f"no account {TYPO} in keyless-dev; did you mean {TARGET}?")
    assert all(ALICE in line and "DENIED" in line for line in minted)
    assert "projects/-/serviceAccounts/" not in "\n".join(minted)  # emails, not unique ids

    newest = [json.loads(line) for line in kl(server, "audit", "--format", "json").stdout.splitlines()]
    oldest = [json.loads(line) for line in kl(server, "audit", "--format", "json", "--order", "asc").stdout
              .splitlines()]
    # (Each run of the CLI gets its token first: the second run's grant is one entry more.)
    assert [e for e in oldest if e in newest] == newest[::-1] and len(oldest) == len(newest) + 1
    assert newest[0]["timestamp"] > newest[-1]["timestamp"]
    office_entry = newest[[e["protoPayload"]["methodName"] for e in newest].index("GenerateAccessToken")]
    assert office_entry["protoPayload"]["resourceName"].startswith("projects/-/serviceAccounts/1")  # ids kept
    assert office_entry["resource"]["labels"]["email_id"] == OFFICE
    assert office_entry["protoPayload"]["metadata"]["explanation"]["reason"] == "CONDITION_NOT_MET"
    assert kl(server, "audit", "--order", "sideways", expect=2).stderr.strip().endswith(
        "--order is desc (newest first) or asc.")
