"""One IAM condition cannot freeze the server (issue 14 item 4).

CEL macros nest and their work multiplies: a 367-character condition of nested ``.all()`` over lists of nine
numbers held the event loop, so every request, for seconds. ``setIamPolicy`` now refuses a condition over the
limits of keyless/domain/conditions.py (listed in docs/api.md) with 400 INVALID_ARGUMENT naming the limit,
and a condition that reached the store anyway is evaluated under a step budget and grants nothing.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyless.domain.conditions import (
    EVALUATION_BUDGET,
    MAX_COMPREHENSION_NESTING,
    RequestContext,
    load_condition,
)
from keyless.domain.policy import new_etag
from keyless.service.core import account_condition_name, account_resource
from keyless.storage.base import ServiceAccount
from tests.conftest import Server
from tests.http.helpers import CLOUD, PROJECT, TOKEN_CREATOR, Api, assert_google_error

_NINE = "[1,2,3,4,5,6,7,8,9]"
STALLING = ('resource.type == "iam.googleapis.com/ServiceAccount" && '
            'resource.name.startsWith("projects/-/serviceAccounts/") && '
            'request.time >= timestamp("2020-01-01T00:00:00Z") && '
            'request.time < timestamp("2100-01-01T00:00:00Z") && '
            f"{_NINE}.all(a, {_NINE}.all(b, {_NINE}.all(c, {_NINE}.all(d, {_NINE}.all(e, e != 10)))))")  # 367 characters, as long as the issue's
GET_TOKEN = "iam.serviceAccounts.getAccessToken"


@pytest.fixture
def account(api: Api) -> dict[str, Any]:
    created = api.create_sa("frozen-bot")
    api.grant_owner_token_creator(created["email"])
    return created


def _owner(api: Api) -> str:
    return f"user:{api.inproc.owner['account']}"


@pytest.mark.parametrize("where", ["account", "project"])
def test_set_iam_policy_refuses_the_stalling_condition_naming_the_limit(
        api: Api, account: dict[str, Any], where: str) -> None:
    path = f"/v1/projects/-/serviceAccounts/{account['email']}" if where == "account" else f"/v1/projects/{PROJECT}"
    before = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    policy = dict(before, version=3, bindings=[*before.get("bindings", []), {
        "role": TOKEN_CREATOR, "members": [_owner(api)], "condition": {"title": "frozen", "expression": STALLING}}])

    error = assert_google_error(api.call("POST", f"{path}:setIamPolicy", {"policy": policy}), 400, "INVALID_ARGUMENT")

    assert "comprehension nesting" in error["message"], error
    assert f"of {MAX_COMPREHENSION_NESTING}" in error["message"], error
    assert error["details"][0]["fieldViolations"][0]["field"] == "policy.bindings.condition.expression"
    after = api.ok("POST", f"{path}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    assert after == before


def _store_owner_binding(api: Api, account: dict[str, Any], expression: str) -> str:
    """Write the account's policy straight into the store, around setIamPolicy, as an older keyless or a hand-
    edited database might hold it: the owner's token-creator grant, under ``expression``."""
    resource = account_resource(_stored_account(api, account["email"]))
    body = {"version": 3, "bindings": [{"role": TOKEN_CREATOR, "members": [_owner(api)],
                                        "condition": {"title": "stored", "expression": expression}}]}
    assert api.inproc.run(api.inproc.keyless.store.put_policy(resource, body, new_etag(), expected_etag=None))
    return resource


def _stored_account(api: Api, email: str) -> ServiceAccount:
    found = api.inproc.run(api.inproc.keyless.store.find_service_account(email))
    assert found is not None
    return found


def _can_mint(api: Api, email: str) -> bool:
    path = f"/v1/projects/-/serviceAccounts/{email}"
    tested = api.ok("POST", f"{path}:testIamPermissions", {"permissions": [GET_TOKEN]})
    minted = api.call("POST", f"{path}:generateAccessToken", {"scope": [CLOUD]})
    if minted.status_code != 200:
        assert_google_error(minted, 403, "PERMISSION_DENIED")
    assert (tested == {"permissions": [GET_TOKEN]}) is (minted.status_code == 200)
    return minted.status_code == 200


def test_a_stored_stalling_condition_runs_out_of_budget_and_grants_nothing(
        api: Api, account: dict[str, Any]) -> None:
    # The path around setIamPolicy works: a stored condition that holds grants.
    _store_owner_binding(api, account, "request.time < timestamp(\"2100-01-01T00:00:00Z\")")
    assert _can_mint(api, account["email"])

    resource = _store_owner_binding(api, account, STALLING)
    assert not _can_mint(api, account["email"])

    # Not granted because the evaluation used up its steps (not a parse error, not a false result).
    policy = api.inproc.run(api.inproc.keyless.core.load_policy(resource))
    compiled = policy.bindings[0].compiled_condition()
    assert compiled is not None and compiled.expression == STALLING
    sa = _stored_account(api, account["email"])
    outcome = compiled.run(RequestContext(api.clock.now(), account_condition_name(sa),
                                          "iam.googleapis.com/ServiceAccount"))
    assert outcome.over_budget and not outcome.granted
    assert EVALUATION_BUDGET < outcome.steps <= EVALUATION_BUDGET + 10
    assert outcome == load_condition(STALLING).run(RequestContext(api.clock.now(), account_condition_name(sa),
                                                                  "iam.googleapis.com/ServiceAccount"))


def test_seed_apply_refuses_the_stalling_condition_naming_the_limit(server: Server, tmp_path: Path) -> None:
    """``keyless apply`` sets policies through setIamPolicy, so a seed file meets the same limits."""
    account_id = f"frozen-{secrets.token_hex(3)}"
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump({"projects": [{"projectId": "keyless-dev", "serviceAccounts": [{
        "accountId": account_id, "bindings": [{
            "role": TOKEN_CREATOR, "members": ["user:someone@example.com"],
            "condition": {"title": "frozen", "expression": STALLING}}]}]}]}))

    proc = server.cli("apply", str(seed), check=False)

    assert proc.returncode == 1, proc.stderr
    assert "INVALID_ARGUMENT" in proc.stderr and "comprehension nesting" in proc.stderr, proc.stderr
    policy = server.owner("POST", f"/v1/projects/-/serviceAccounts/{account_id}@keyless-dev.iam.gserviceaccount.com"
                          ":getIamPolicy?options.requestedPolicyVersion=3")
    assert "bindings" not in policy
