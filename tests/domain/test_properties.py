"""Property tests: is_allowed against an independent reference model, plan_chain's shape, and round trips."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keyless.domain import roles
from keyless.domain.conditions import RequestContext
from keyless.domain.delegation import parse_delegates, plan_chain
from keyless.domain.lifetimes import DEFAULT_LIFETIME, check_lifetime, format_timestamp, parse_duration, parse_timestamp
from keyless.domain.names import AccountRef
from keyless.domain.policy import Binding, Condition, Policy, is_allowed, parse_policy, validate_member
from keyless.domain.roles import PERM_IMPLICIT_DELEGATION
from keyless.errors import InvalidArgument

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = 1_800_000_000.0
CTX = RequestContext(time=NOW, resource_name="projects/-/serviceAccounts/108000000000000000001",
                     resource_type="iam.googleapis.com/ServiceAccount")

# Conditions whose truth at CTX is known by construction.
CONDITIONS: list[tuple[str, bool]] = [
    ('request.time < timestamp("2100-01-01T00:00:00Z")', True),
    ('request.time < timestamp("2000-01-01T00:00:00Z")', False),
    ('request.time > timestamp("2027-01-15T07:59:59Z")', True),
    ('request.time >= timestamp("2027-01-15T08:00:01Z")', False),
    ('resource.type == "iam.googleapis.com/ServiceAccount"', True),
    ('resource.type == "cloudresourcemanager.googleapis.com/Project"', False),
    ('resource.name.startsWith("projects/-/serviceAccounts/")', True),
    ('resource.name.endsWith("/2")', False),
    ("true", True),
    ("false", False),
]

MEMBER_POOL = [
    "user:alice@example.com", "user:bob@example.com", "user:carol@other.org",
    "serviceAccount:sa-1@proj-1.iam.gserviceaccount.com", "serviceAccount:sa-2@proj-1.iam.gserviceaccount.com",
    "group:devs@example.com", "group:ops@other.org", "domain:example.com", "domain:other.org",
    "allUsers", "allAuthenticatedUsers", "deleted:user:dave@example.com?uid=17",
]
ROLE_NAMES = sorted(roles.ROLES)
PERMISSIONS = [*sorted(roles.ALL_PERMISSIONS), "iam.serviceAccounts.fly", "storage.buckets.get", "", "*"]


def _resolve(value: object, *, extended_allowed: bool) -> int:
    """A request's lifetime as the REST adapter and the core take it: the Duration parsed, then checked."""
    if value is None or value == "":
        return DEFAULT_LIFETIME
    return check_lifetime(parse_duration(value, field="lifetime"), extended_allowed=extended_allowed)


@dataclass(frozen=True)
class RefBinding:
    role: str
    members: frozenset[str]
    condition: tuple[str, bool] | None


def reference_allowed(policies: list[list[RefBinding]], identities: frozenset[str], permission: str) -> bool:
    """Granted iff some binding whose condition holds (or that has none) has a role containing the permission
    and names one of the identities."""
    return any(
        permission in roles.ROLES[b.role] and not b.members.isdisjoint(identities)
        and (b.condition is None or b.condition[1])
        for policy in policies for b in policy
    )


ref_bindings = st.builds(
    RefBinding,
    role=st.sampled_from(ROLE_NAMES),
    members=st.frozensets(st.sampled_from(MEMBER_POOL), min_size=0, max_size=4),
    condition=st.one_of(st.none(), st.none(), st.sampled_from(CONDITIONS)),
)


def to_policy(bindings: list[RefBinding]) -> Policy:
    return Policy(3, tuple(
        Binding(b.role, b.members, Condition(b.condition[0], "c") if b.condition else None) for b in bindings))


@SETTINGS
@given(
    policies=st.lists(st.lists(ref_bindings, max_size=6), max_size=3),
    identities=st.frozensets(st.sampled_from(MEMBER_POOL), max_size=5),
    permission=st.sampled_from(PERMISSIONS),
)
def test_is_allowed_agrees_with_reference(policies: list[list[RefBinding]], identities: frozenset[str],
                                          permission: str) -> None:
    expected = reference_allowed(policies, identities, permission)
    assert is_allowed([to_policy(p) for p in policies], identities, permission, CTX) is expected


@SETTINGS
@given(
    bindings=st.lists(st.builds(RefBinding, role=st.sampled_from(ROLE_NAMES),
                                members=st.frozensets(st.sampled_from(MEMBER_POOL), max_size=4),
                                condition=st.none()), max_size=8),
    identities=st.frozensets(st.sampled_from(MEMBER_POOL), max_size=5),
    permission=st.sampled_from(PERMISSIONS),
)
def test_unconditional_policies_through_parse_policy_agree_with_reference(
        bindings: list[RefBinding], identities: frozenset[str], permission: str) -> None:
    """The brief's model: granted iff an unconditional binding's role has it and its members meet the identities."""
    raw = {"version": 1, "bindings": [{"role": b.role, "members": sorted(b.members)} for b in bindings]}
    parsed = parse_policy(raw)
    expected = any(permission in roles.ROLES[b.role] and not b.members.isdisjoint(identities) for b in bindings)
    assert is_allowed([parsed], identities, permission, CTX) is expected
    # Parsing merges duplicate roles and drops empty bindings without changing what is granted.
    assert len({b.role for b in parsed.bindings}) == len(parsed.bindings)
    assert all(b.members for b in parsed.bindings)
    for role in {b.role for b in bindings}:
        assert parsed.members_of(role) == frozenset().union(*(b.members for b in bindings if b.role == role))


@SETTINGS
@given(identities=st.frozensets(st.sampled_from(MEMBER_POOL), max_size=5), permission=st.sampled_from(PERMISSIONS))
def test_empty_policies_grant_nothing(identities: frozenset[str], permission: str) -> None:
    assert not is_allowed([], identities, permission, CTX)
    assert not is_allowed([Policy(1, ())], identities, permission, CTX)


# ---------------------------------------------------------------- delegation


account_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{4,12}[a-z0-9]", fullmatch=True).map(
        lambda a: f"{a}@proj-1.iam.gserviceaccount.com"),
    st.from_regex(r"[1-9][0-9]{0,20}", fullmatch=True),
)


@SETTINGS
@given(chain=st.lists(account_names, min_size=1, max_size=11, unique_by=str.lower),
       verb=st.sampled_from([roles.PERM_GET_ACCESS_TOKEN, roles.PERM_GET_ID_TOKEN, roles.PERM_SIGN_BLOB,
                             roles.PERM_SIGN_JWT]))
def test_plan_chain_shape(chain: list[str], verb: str) -> None:
    *delegate_ids, target_id = chain
    delegates = parse_delegates([f"projects/-/serviceAccounts/{a}" for a in delegate_ids])
    target = AccountRef("-", target_id)
    hops = plan_chain(delegates, target, verb)
    assert len(hops) == len(delegates) + 1
    assert hops[0].grantee is None
    assert [h.resource for h in hops] == [*delegates, target]
    for previous, hop in itertools.pairwise(hops):
        assert hop.grantee == previous.resource
    assert hops[-1].permission == verb
    assert all(h.permission == PERM_IMPLICIT_DELEGATION for h in hops[:-1])


@SETTINGS
@given(chain=st.lists(account_names, min_size=1, max_size=10, unique_by=str.lower), data=st.data())
def test_plan_chain_rejects_any_repeated_account(chain: list[str], data: st.DataObject) -> None:
    repeated = data.draw(st.sampled_from(chain))
    position = data.draw(st.integers(0, len(chain)))
    looped = [*chain[:position], repeated.upper() if "@" in repeated else repeated, *chain[position:]]
    *delegates, target = [AccountRef("-", a) for a in looped]
    try:
        plan_chain(delegates, target, roles.PERM_SIGN_JWT)
    except InvalidArgument as exc:
        assert exc.field == "delegates"
    else:
        raise AssertionError(f"loop through {repeated} was accepted: {looped}")


@SETTINGS
@given(count=st.integers(11, 30))
def test_more_than_ten_delegates_are_rejected(count: int) -> None:
    try:
        parse_delegates([f"projects/-/serviceAccounts/{i + 1}" for i in range(count)])
    except InvalidArgument:
        pass
    else:
        raise AssertionError(f"{count} delegates were accepted")


# ---------------------------------------------------------------- durations, timestamps, members


@SETTINGS
@given(seconds=st.integers(1, 3600))
def test_lifetimes_up_to_an_hour_round_trip(seconds: int) -> None:
    assert _resolve(f"{seconds}s", extended_allowed=False) == seconds


@SETTINGS
@given(seconds=st.integers(3601, 43200))
def test_extended_lifetimes_need_the_constraint(seconds: int) -> None:
    assert _resolve(f"{seconds}s", extended_allowed=True) == seconds
    try:
        _resolve(f"{seconds}s", extended_allowed=False)
    except InvalidArgument:
        pass
    else:
        raise AssertionError(f"{seconds}s accepted without the lifetime extension")


@SETTINGS
@given(whole=st.integers(0, 10**12 - 1), nanos=st.integers(0, 999_999_999))
def test_parse_duration_reads_fractions(whole: int, nanos: int) -> None:
    text = f"{whole}.{nanos:09d}s"
    assert abs(parse_duration(text, field="d") - (whole + nanos / 1e9)) < 1e-3
    assert parse_duration(f"-{text}", field="d") == -parse_duration(text, field="d")


@SETTINGS
@given(epoch=st.integers(0, 253_402_300_799))  # up to 9999-12-31T23:59:59Z
def test_format_and_parse_timestamp_round_trip(epoch: int) -> None:
    text = format_timestamp(epoch)
    assert text.endswith("Z") and "." not in text and len(text) == 20
    assert parse_timestamp(text) == epoch
    assert format_timestamp(epoch + 0.999) == text


@SETTINGS
@given(kind=st.sampled_from(["user", "serviceAccount", "group"]),
       local=st.from_regex(r"[A-Za-z0-9._+-]{1,20}", fullmatch=True),
       domain=st.from_regex(r"[A-Za-z0-9-]{1,12}\.[A-Za-z]{2,6}", fullmatch=True))
def test_email_members_normalise_idempotently(kind: str, local: str, domain: str) -> None:
    member = f"{kind}:{local}@{domain}"
    normalised = validate_member(member)
    assert normalised == f"{kind}:{local.lower()}@{domain.lower()}"
    assert validate_member(normalised) == normalised


@SETTINGS
@given(text=st.text(max_size=40))
def test_validate_member_never_crashes(text: str) -> None:
    assume(text not in ("allUsers", "allAuthenticatedUsers"))
    try:
        out = validate_member(text)
    except InvalidArgument:
        return
    assert isinstance(out, str) and out
