"""Why a permission was denied, as the owner reads it in the audit log: ``explain`` beside ``is_allowed``
(which conditional bindings would have granted, which roles would), and the nearest email for a typo."""

from __future__ import annotations

from typing import Any

from keyless.domain.conditions import RequestContext
from keyless.domain.names import closest_email
from keyless.domain.policy import (
    EMPTY_POLICY,
    explain,
    granting_roles,
    is_allowed,
    load_stored_policy,
    parse_policy,
)
from keyless.domain.policy import Principal as P

TOKEN = "iam.serviceAccounts.getAccessToken"
CREATOR = "roles/iam.serviceAccountTokenCreator"
PAST = 'request.time < timestamp("2000-01-01T00:00:00Z")'
FUTURE = 'request.time < timestamp("2100-01-01T00:00:00Z")'
CTX = RequestContext(time=1_800_000_000.0, resource_name="projects/-/serviceAccounts/123",
                     resource_type="iam.googleapis.com/ServiceAccount")
ALICE = P("user", "alice@example.com")
TARGET = "target-sa@keyless-dev.iam.gserviceaccount.com"


def conditional(title: str, expression: str, member: str = "user:alice@example.com", role: str = CREATOR) -> dict[str, Any]:
    return {"role": role, "members": [member], "condition": {"title": title, "expression": expression}}


def test_no_binding_names_the_roles_that_would_grant_predefined_first() -> None:
    policy = parse_policy({"bindings": [{"role": CREATOR, "members": ["user:bob@example.com"]},
                                        {"role": "roles/viewer", "members": ["user:alice@example.com"]}]})
    why = explain([policy, EMPTY_POLICY], ALICE.identities(), TOKEN, CTX)
    assert not why.granted and why.reason == "NO_MATCHING_BINDING" and why.unmet == ()
    assert why.granting_roles == (CREATOR, "roles/iam.workloadIdentityUser")
    assert granting_roles("iam.serviceAccountKeys.create") == (
        "roles/iam.serviceAccountKeyAdmin", "roles/editor", "roles/owner")  # the basic roles last
    assert why.describe("user:alice@example.com", TARGET) == (
        f"no binding grants {TOKEN} to user:alice@example.com on {TARGET} "
        f"(roles that would: {', '.join(why.granting_roles)})")
    assert why.to_json() == {"reason": "NO_MATCHING_BINDING", "permission": TOKEN,
                             "grantingRoles": list(why.granting_roles)}


def test_a_condition_that_evaluated_false_is_named_by_its_title() -> None:
    policy = parse_policy({"version": 3, "bindings": [conditional("office-hours", PAST),
                                                      conditional("someone else", PAST, "user:bob@example.com"),
                                                      conditional("wrong role", PAST, role="roles/viewer")]})
    assert not is_allowed([policy], ALICE.identities(), TOKEN, CTX)
    why = explain([policy], ALICE.identities(), TOKEN, CTX)
    assert why.reason == "CONDITION_NOT_MET"
    assert [(c.title, c.role, c.error) for c in why.unmet] == [("office-hours", CREATOR, "")]
    text = why.describe("user:alice@example.com", TARGET)
    assert text.startswith("condition 'office-hours' evaluated false")
    assert CREATOR in text and TOKEN in text and TARGET in text
    assert why.to_json()["conditions"] == [{"title": "office-hours", "role": CREATOR, "result": "false"}]


def test_a_condition_granted_through_a_group_and_one_that_errs() -> None:
    # Stored leniently (as an old keyless may have written it): it cannot be evaluated, so it grants nothing.
    policy = load_stored_policy({"version": 3, "bindings": [
        conditional("broken", "request.time <", "group:devs@example.com"),
        conditional("weekdays", PAST, "domain:example.com")]}, "e")
    member = P("user", "alice@example.com", frozenset({"devs@example.com"}))
    why = explain([EMPTY_POLICY, policy], member.identities(), TOKEN, CTX)
    assert [c.title for c in why.unmet] == ["broken", "weekdays"]
    assert why.unmet[0].error.startswith("not valid CEL") and why.unmet[1].error == ""
    text = why.describe("user:alice@example.com", TARGET)
    assert "condition 'broken' could not be evaluated (not valid CEL" in text
    assert "condition 'weekdays' evaluated false" in text
    assert why.to_json()["conditions"][0]["result"] == "error"


def test_a_grant_found_when_explaining_says_so() -> None:
    """The policy or the time may have changed between the check and the explanation."""
    policy = parse_policy({"version": 3, "bindings": [conditional("until 2100", FUTURE)]})
    why = explain([policy], ALICE.identities(), TOKEN, CTX)
    assert why.granted and why.reason == "GRANTED_ON_RECHECK"
    assert "holds" in why.describe("user:alice@example.com", TARGET)


def test_a_permission_no_role_grants() -> None:
    assert granting_roles("no.such.permission") == ()
    why = explain([EMPTY_POLICY], ALICE.identities(), "no.such.permission", CTX)
    assert why.describe("user:alice@example.com", "projects/p").endswith("(no role grants it)")


def test_roles_that_would_grant_are_listed_six_at_most() -> None:
    roles = granting_roles("iam.serviceAccounts.get")
    assert len(roles) > 6
    text = explain([EMPTY_POLICY], ALICE.identities(), "iam.serviceAccounts.get", CTX).describe("user:a@b.c", "r")
    assert text.endswith(f"(roles that would: {', '.join(roles[:6])}, ...)")


def test_closest_email_among_the_project_accounts() -> None:
    accounts = [TARGET, "other-sa@keyless-dev.iam.gserviceaccount.com", "deployer@keyless-dev.iam.gserviceaccount.com"]
    assert closest_email("traget-sa@keyless-dev.iam.gserviceaccount.com", accounts) == TARGET
    assert closest_email("TARGET-SA@keyless-dev.iam.gserviceaccount.com", accounts) == TARGET
    assert closest_email("target-sa@keyles-dev.iam.gserviceaccount.com", accounts) == TARGET  # a project typo
    assert closest_email("deploy@keyless-dev.iam.gserviceaccount.com", accounts) == accounts[2]
    # Nothing close: no suggestion (a shared domain alone does not make two emails alike).
    assert closest_email("zzzzzz@keyless-dev.iam.gserviceaccount.com", accounts) is None
    assert closest_email(TARGET, []) is None
    assert closest_email("123456789012345678901", accounts) is None
