"""Allow-policy domain rules: parse_policy validation, member forms, versions, update masks and evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain import roles
from keyless.domain.conditions import RequestContext
from keyless.domain.policy import (
    EMPTY_ETAG,
    EMPTY_POLICY,
    MAX_MEMBERS,
    Binding,
    Condition,
    Policy,
    Principal,
    apply_update_mask,
    check_requested_version,
    is_allowed,
    parse_policy,
    validate_member,
)
from keyless.errors import InvalidArgument

FUTURE = 'request.time < timestamp("2100-01-01T00:00:00Z")'
PAST = 'request.time < timestamp("2000-01-01T00:00:00Z")'
CTX = RequestContext(time=1_800_000_000.0, resource_name="projects/-/serviceAccounts/123",
                     resource_type="iam.googleapis.com/ServiceAccount")


def binding(role: str = "roles/viewer", members: list[Any] | None = None, condition: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "members": members if members is not None else ["user:alice@example.com"]}
    if condition is not None:
        out["condition"] = condition
    return out


def cond(expression: str = FUTURE, title: str = "until 2100") -> dict[str, str]:
    return {"expression": expression, "title": title}


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize("version", [0, 1, 3, "3", "1"])
def test_valid_versions_are_accepted(version: Any) -> None:
    policy = parse_policy({"version": version, "bindings": [binding()]})
    assert policy.version == int(version)
    assert len(policy.bindings) == 1


def test_missing_version_means_zero() -> None:
    assert parse_policy({"bindings": [binding()]}).version == 0


@pytest.mark.parametrize("version", [2, 4, -1, 100, True, False, 1.5, "two", None, [3], {"v": 3}])
def test_invalid_versions_are_rejected(version: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_policy({"version": version, "bindings": [binding()]})
    assert info.value.field == "policy.version"
    assert info.value.http_status == 400
    assert info.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("version", [0, 1])
def test_conditions_need_version_3(version: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_policy({"version": version, "bindings": [binding(condition=cond())]})
    assert "version 3" in info.value.message


def test_missing_version_with_condition_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [binding(condition=cond())]})


def test_condition_accepted_at_version_3() -> None:
    policy = parse_policy({"version": 3, "bindings": [binding(condition=cond())]})
    (b,) = policy.bindings
    assert b.condition == Condition(FUTURE, "until 2100")
    assert policy.has_conditions
    assert policy.effective_version == 3
    assert policy.to_json()["bindings"][0]["condition"] == {"expression": FUTURE, "title": "until 2100"}


def test_unconditional_policy_reports_version_1_even_if_written_as_3() -> None:
    policy = parse_policy({"version": 3, "bindings": [binding()]})
    assert policy.effective_version == 1
    assert policy.to_json()["version"] == 1


# ---------------------------------------------------------------- roles


@pytest.mark.parametrize("role", ["roles/nope", "roles/Viewer", "viewer", "roles/owner ", "projects/p/roles/x"])
def test_unknown_roles_are_rejected(role: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_policy({"bindings": [binding(role=role)]})
    assert info.value.field == "policy.bindings.role"


@pytest.mark.parametrize("role", [None, "", 5, ["roles/viewer"]])
def test_missing_or_mistyped_role_is_rejected(role: Any) -> None:
    raw = binding()
    raw["role"] = role
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [raw]})


@pytest.mark.parametrize("role", sorted(roles.ROLES))
def test_every_catalogue_role_is_accepted(role: str) -> None:
    (b,) = parse_policy({"bindings": [binding(role=role)]}).bindings
    assert b.role == role


def test_known_roles_override_restricts_the_catalogue() -> None:
    assert parse_policy({"bindings": [binding("roles/custom")]}, known_roles=["roles/custom"]).bindings
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [binding("roles/viewer")]}, known_roles=["roles/custom"])


# ---------------------------------------------------------------- members


@pytest.mark.parametrize(("member", "normalised"), [
    ("user:alice@example.com", "user:alice@example.com"),
    ("user:Alice@Example.COM", "user:alice@example.com"),
    ("serviceAccount:sa-1@proj-1.iam.gserviceaccount.com", "serviceAccount:sa-1@proj-1.iam.gserviceaccount.com"),
    ("group:admins@example.org", "group:admins@example.org"),
    ("domain:example.com", "domain:example.com"),
    ("domain:Sub.Example.com", "domain:sub.example.com"),
    ("deleted:user:bob@example.com?uid=123456789", "deleted:user:bob@example.com?uid=123456789"),
    ("deleted:serviceAccount:sa@p.iam.gserviceaccount.com?uid=108", "deleted:serviceAccount:sa@p.iam.gserviceaccount.com?uid=108"),
    ("deleted:group:g@example.org?uid=42", "deleted:group:g@example.org?uid=42"),
    ("allUsers", "allUsers"),
    ("allAuthenticatedUsers", "allAuthenticatedUsers"),
])
def test_member_forms_are_accepted(member: str, normalised: str) -> None:
    assert validate_member(member) == normalised
    (b,) = parse_policy({"bindings": [binding(members=[member])]}).bindings
    assert b.members == frozenset({normalised})


@pytest.mark.parametrize("member", [
    "", "alice@example.com", "user:", "user:alice", "user:alice@", "user:@example.com", "user:a b@example.com",
    "users:alice@example.com", "serviceaccount:sa@p.iam.gserviceaccount.com", "group:nope", "domain:",
    "domain:localhost", "domain:-bad-.com", "domain:exa mple.com", "deleted:user:bob@example.com",
    "deleted:user:bob@example.com?uid=", "deleted:user:bob@example.com?uid=abc", "deleted:domain:example.com?uid=1",
    "allusers", "AllUsers", "allAuthenticatedusers", "user:alice@example.com ", " user:alice@example.com",
    "principal://", 42, None, True, ["user:alice@example.com"], {"user": "alice@example.com"},
])
def test_garbage_members_are_rejected(member: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_member(member)
    assert info.value.field == "policy.bindings.members"
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [binding(members=[member])]})


def test_members_must_be_a_list() -> None:
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [binding(members="user:alice@example.com")]})  # type: ignore[arg-type]


def test_too_many_members_are_rejected() -> None:
    members = [f"user:u{i}@example.com" for i in range(MAX_MEMBERS + 1)]
    with pytest.raises(InvalidArgument):
        parse_policy({"bindings": [binding(members=members)]})
    assert parse_policy({"bindings": [binding(members=members[:MAX_MEMBERS])]}).bindings


# ---------------------------------------------------------------- shape


@pytest.mark.parametrize("raw", [None, [], "policy", 3, {"bindings": "x"}, {"bindings": {"role": "roles/viewer"}},
                                 {"bindings": ["roles/viewer"]}, {"bindings": [None]}, {"etag": 5},
                                 {"etag": ["x"]}, {"etag": "not base64!"}])
def test_malformed_policies_are_rejected(raw: Any) -> None:
    with pytest.raises(InvalidArgument):
        parse_policy(raw)


@pytest.mark.parametrize("condition", [
    "request.time < timestamp('2100-01-01T00:00:00Z')", {"title": "t"}, {"expression": "", "title": "t"},
    {"expression": FUTURE}, {"expression": FUTURE, "title": ""}, {"expression": FUTURE, "title": "x" * 101},
    {"expression": FUTURE, "title": "t", "description": 5}, {"expression": 5, "title": "t"},
    {"expression": "request.time <", "title": "t"}, {"expression": "foo.bar == 1", "title": "t"},
    {"expression": "resource.name", "title": "t"},
])
def test_invalid_conditions_are_rejected(condition: Any) -> None:
    with pytest.raises(InvalidArgument):
        parse_policy({"version": 3, "bindings": [binding(condition=condition)]})


def test_empty_policy_parses() -> None:
    policy = parse_policy({})
    assert policy.bindings == ()
    assert policy.etag == ""
    assert EMPTY_POLICY.to_json() == {"version": 1, "etag": EMPTY_ETAG}


def test_etag_is_kept() -> None:
    assert parse_policy({"etag": "BwXhqDlYRSo=", "bindings": []}).etag == "BwXhqDlYRSo="


@pytest.mark.parametrize("sent", ["CtA4C2S+eaU=", "CtA4C2S-eaU=", "CtA4C2S-eaU", "CtA4C2S+eaU"])
def test_equal_etag_bytes_are_the_same_etag(sent: str) -> None:
    assert parse_policy({"etag": sent, "bindings": []}).etag == "CtA4C2S+eaU="


def test_duplicate_bindings_are_merged() -> None:
    policy = parse_policy({"bindings": [
        binding("roles/viewer", ["user:a@example.com", "user:b@example.com"]),
        binding("roles/editor", ["user:c@example.com"]),
        binding("roles/viewer", ["user:B@example.com", "group:g@example.com"]),
    ]})
    by_role = {b.role: b.members for b in policy.bindings}
    assert len(policy.bindings) == 2
    assert by_role["roles/viewer"] == frozenset({"user:a@example.com", "user:b@example.com", "group:g@example.com"})
    assert by_role["roles/editor"] == frozenset({"user:c@example.com"})


def test_same_role_with_different_conditions_stays_separate() -> None:
    policy = parse_policy({"version": 3, "bindings": [
        binding("roles/viewer", ["user:a@example.com"]),
        binding("roles/viewer", ["user:b@example.com"], cond(FUTURE, "one")),
        binding("roles/viewer", ["user:c@example.com"], cond(FUTURE, "one")),
        binding("roles/viewer", ["user:d@example.com"], cond(PAST, "two")),
    ]})
    assert len(policy.bindings) == 3
    by_cond = {(b.condition.title if b.condition else None): b.members for b in policy.bindings}
    assert by_cond[None] == frozenset({"user:a@example.com"})
    assert by_cond["one"] == frozenset({"user:b@example.com", "user:c@example.com"})
    assert by_cond["two"] == frozenset({"user:d@example.com"})


def test_bindings_without_members_are_dropped() -> None:
    policy = parse_policy({"bindings": [binding("roles/viewer", []), {"role": "roles/editor"},
                                        binding("roles/owner", ["user:o@example.com"])]})
    assert [b.role for b in policy.bindings] == ["roles/owner"]


def test_policy_json_sorts_members() -> None:
    policy = parse_policy({"bindings": [binding("roles/viewer", ["user:b@example.com", "user:a@example.com"])]})
    assert policy.to_json()["bindings"] == [{"role": "roles/viewer",
                                             "members": ["user:a@example.com", "user:b@example.com"]}]


# ---------------------------------------------------------------- requested version


UNCONDITIONAL = parse_policy({"version": 1, "bindings": [binding()]})
CONDITIONAL = parse_policy({"version": 3, "bindings": [binding(condition=cond())]})


@pytest.mark.parametrize("requested", [0, 1, 3])
def test_any_valid_version_reads_an_unconditional_policy(requested: int) -> None:
    check_requested_version(UNCONDITIONAL, requested)
    check_requested_version(EMPTY_POLICY, requested)


def test_conditional_policy_needs_version_3() -> None:
    check_requested_version(CONDITIONAL, 3)
    for requested in (0, 1):
        with pytest.raises(InvalidArgument) as info:
            check_requested_version(CONDITIONAL, requested)
        assert info.value.field == "options.requestedPolicyVersion"


@pytest.mark.parametrize("requested", [2, 4, -1, 99])
def test_invalid_requested_versions_are_rejected(requested: int) -> None:
    with pytest.raises(InvalidArgument):
        check_requested_version(UNCONDITIONAL, requested)
    with pytest.raises(InvalidArgument):
        check_requested_version(CONDITIONAL, requested)


# ---------------------------------------------------------------- update mask


CURRENT = Policy(1, (Binding("roles/viewer", frozenset({"user:old@example.com"})),), "CURRENT=")
NEW = Policy(1, (Binding("roles/editor", frozenset({"user:new@example.com"})),), "NEWETAG=")


@pytest.mark.parametrize("mask", [None, ""])
def test_no_mask_replaces_everything(mask: Any) -> None:
    assert apply_update_mask(CURRENT, NEW, mask) == NEW


def test_bindings_mask_replaces_bindings_but_not_etag() -> None:
    out = apply_update_mask(CURRENT, NEW, "bindings")
    assert out.bindings == NEW.bindings
    assert out.etag == ""


def test_bindings_and_etag_mask() -> None:
    out = apply_update_mask(CURRENT, NEW, "bindings, etag")
    assert out.bindings == NEW.bindings
    assert out.etag == NEW.etag


def test_etag_mask_keeps_current_bindings() -> None:
    out = apply_update_mask(CURRENT, NEW, "etag")
    assert out.bindings == CURRENT.bindings
    assert out.etag == NEW.etag


def test_version_mask_keeps_current_bindings() -> None:
    new = Policy(3, NEW.bindings, "")
    out = apply_update_mask(CURRENT, new, "version")
    assert out.bindings == CURRENT.bindings
    assert out.version == 3


def test_audit_configs_mask_is_accepted_and_changes_nothing() -> None:
    out = apply_update_mask(CURRENT, NEW, "auditConfigs")
    assert out.bindings == CURRENT.bindings
    assert out.version == CURRENT.version


def test_conditional_bindings_force_version_3() -> None:
    conditional = Policy(1, (Binding("roles/viewer", frozenset({"user:a@example.com"}), Condition(FUTURE, "t")),))
    assert apply_update_mask(CURRENT, conditional, "bindings").version == 3


@pytest.mark.parametrize("mask", ["members", "bindings,foo", "policy.bindings", "*"])
def test_unknown_mask_fields_are_rejected(mask: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        apply_update_mask(CURRENT, NEW, mask)
    assert info.value.field == "updateMask"


@pytest.mark.parametrize("mask", [5, ["bindings"], {"paths": ["bindings"]}, True])
def test_non_string_masks_are_rejected(mask: Any) -> None:
    with pytest.raises(InvalidArgument):
        apply_update_mask(CURRENT, NEW, mask)


# ---------------------------------------------------------------- evaluation


def test_principal_identities() -> None:
    user = Principal("user", "alice@example.com", frozenset({"devs@example.com"}))
    assert user.identities() == frozenset({"user:alice@example.com", "allUsers", "allAuthenticatedUsers",
                                           "group:devs@example.com", "domain:example.com"})
    sa = Principal("serviceAccount", "sa@p.iam.gserviceaccount.com")
    assert sa.identities() == frozenset({"serviceAccount:sa@p.iam.gserviceaccount.com", "allUsers",
                                         "allAuthenticatedUsers"})


def test_is_allowed_by_role_membership() -> None:
    policy = parse_policy({"bindings": [binding("roles/iam.serviceAccountTokenCreator", ["user:a@example.com"])]})
    ids = Principal("user", "a@example.com").identities()
    assert is_allowed([policy], ids, "iam.serviceAccounts.getAccessToken", CTX)
    assert not is_allowed([policy], ids, "iam.serviceAccounts.delete", CTX)
    other = Principal("user", "b@example.com").identities()
    assert not is_allowed([policy], other, "iam.serviceAccounts.getAccessToken", CTX)


def test_is_allowed_across_policies_and_groups_and_domains() -> None:
    sa_policy = parse_policy({"bindings": [binding("roles/viewer", ["group:devs@example.com"])]})
    project_policy = parse_policy({"bindings": [binding("roles/iam.serviceAccountUser", ["domain:example.com"])]})
    ids = Principal("user", "a@example.com", frozenset({"devs@example.com"})).identities()
    assert is_allowed([sa_policy, project_policy], ids, "iam.serviceAccountKeys.list", CTX)
    assert is_allowed([sa_policy, project_policy], ids, "iam.serviceAccounts.actAs", CTX)
    assert not is_allowed([sa_policy], ids, "iam.serviceAccounts.actAs", CTX)
    sa_ids = Principal("serviceAccount", "x@example.com").identities()  # a domain never matches an account
    assert not is_allowed([project_policy], sa_ids, "iam.serviceAccounts.actAs", CTX)


def test_all_users_grants_everyone() -> None:
    policy = parse_policy({"bindings": [binding("roles/viewer", ["allUsers"])]})
    assert is_allowed([policy], Principal("serviceAccount", "x@y.com").identities(), "iam.serviceAccounts.get", CTX)


def test_conditional_binding_grants_only_while_true() -> None:
    policy = parse_policy({"version": 3, "bindings": [
        binding("roles/viewer", ["user:a@example.com"], cond('request.time < timestamp("2027-01-15T08:00:00Z")')),
    ]})
    ids = Principal("user", "a@example.com").identities()
    before = RequestContext(1_800_000_000.0 - 1, CTX.resource_name, CTX.resource_type)
    at = RequestContext(1_800_000_000.0, CTX.resource_name, CTX.resource_type)
    assert is_allowed([policy], ids, "iam.serviceAccounts.get", before)
    assert not is_allowed([policy], ids, "iam.serviceAccounts.get", at)


def test_members_of_ignores_conditional_bindings() -> None:
    policy = parse_policy({"version": 3, "bindings": [
        binding("roles/viewer", ["user:a@example.com"]),
        binding("roles/viewer", ["user:b@example.com"], cond()),
    ]})
    assert policy.members_of("roles/viewer") == frozenset({"user:a@example.com"})


def test_map_members_rewrites_every_binding() -> None:
    policy = parse_policy({"bindings": [binding("roles/viewer", ["user:a@example.com", "user:b@example.com"])]})
    out = policy.map_members(lambda m: "deleted:user:a@example.com?uid=1" if m == "user:a@example.com" else m)
    assert out.bindings[0].members == frozenset({"deleted:user:a@example.com?uid=1", "user:b@example.com"})
