"""Workload identity federation's pure rules: names, members, attribute mapping and condition."""

from __future__ import annotations

import pytest

from keyless.domain import federation as fed
from keyless.domain.policy import Principal, validate_member
from keyless.errors import InvalidArgument, OAuthError

POOL = "projects/123/locations/global/workloadIdentityPools/cluster"
PROVIDER = f"{POOL}/providers/k8s-oidc"
MAPPING = {"google.subject": "assertion.sub", "google.groups": "assertion.groups",
           "attribute.namespace": "assertion.ns"}
CLAIMS = {"sub": "system:serviceaccount:prod:builder", "groups": ["builders", "ops"], "ns": "prod"}


def test_ids_follow_googles_rule() -> None:
    assert fed.check_id("k8s-oidc", "pool", "f") == "k8s-oidc"
    for bad in ("abc", "gcp-pool", "Pool", "a" * 33, "a_b_c", None):
        with pytest.raises(InvalidArgument):
            fed.check_id(bad, "pool", "f")


def test_audience_names_a_provider_with_or_without_https() -> None:
    assert fed.provider_of_audience(f"//iam.googleapis.com/{PROVIDER}") == PROVIDER
    assert fed.provider_of_audience(f"https://iam.googleapis.com/{PROVIDER}") == PROVIDER
    for bad in (PROVIDER, f"//iam.googleapis.com/{POOL}", f"http://iam.googleapis.com/{PROVIDER}",
                f"//evil.example/{PROVIDER}"):
        assert fed.provider_of_audience(bad) is None


def test_mapping_makes_the_identity_and_its_members() -> None:
    identity = fed.map_assertion(PROVIDER, MAPPING, CLAIMS)
    assert identity.subject == CLAIMS["sub"] and identity.groups == ("builders", "ops")
    base = f"principalSet://iam.googleapis.com/{POOL}"
    assert identity.identities() == {
        f"principal://iam.googleapis.com/{POOL}/subject/{CLAIMS['sub']}", f"{base}/*", f"{base}/group/builders",
        f"{base}/group/ops", f"{base}/attribute.namespace/prod", "allUsers", "allAuthenticatedUsers"}
    assert fed.FederatedIdentity.from_json(identity.to_json()) == identity
    principal = Principal.of_federated(identity)
    assert principal.member == identity.member and principal.identities() == identity.identities()
    for member in identity.identities() - {"allUsers", "allAuthenticatedUsers"}:
        assert validate_member(member) == member


def test_subject_is_required_and_bounded() -> None:
    with pytest.raises(OAuthError) as missing:
        fed.map_assertion(PROVIDER, {"google.subject": "assertion.nope"}, CLAIMS)
    assert missing.value.error == "invalid_request"
    with pytest.raises(OAuthError, match="127 bytes"):
        fed.map_assertion(PROVIDER, MAPPING, {**CLAIMS, "sub": "é" * 64})


def test_condition_reads_assertion_google_and_attribute() -> None:
    identity = fed.map_assertion(PROVIDER, MAPPING, CLAIMS)
    fed.check_condition("attribute.namespace == 'prod' && 'ops' in google.groups && assertion.ns == 'prod'",
                        identity, CLAIMS)
    for condition in ("attribute.namespace == 'dev'", "assertion.missing == 'x'", "'x'"):
        with pytest.raises(OAuthError) as refused:
            fed.check_condition(condition, identity, CLAIMS)
        assert refused.value.error == "unauthorized_client"
        assert refused.value.description == fed.CONDITION_REFUSED


def test_mapping_and_condition_are_checked_when_written() -> None:
    with pytest.raises(InvalidArgument, match=r"google\.subject"):
        fed.check_attribute_mapping({"attribute.x": "assertion.x"})
    with pytest.raises(InvalidArgument):
        fed.check_attribute_mapping({"google.subject": "assertion.sub", "attribute.Bad": "assertion.x"})
    with pytest.raises(InvalidArgument):
        fed.check_attribute_mapping({"google.subject": "request.time"})  # a mapping reads assertion only
    with pytest.raises(InvalidArgument, match="comprehension nesting"):  # the bounds of IAM Conditions
        fed.check_attribute_condition("[1,2,3,4,5,6,7,8].all(a, [1,2,3,4,5,6,7,8].all(b, "
                                      "assertion.l.all(c, assertion.l.exists(d, d == c))))")
    assert fed.check_attribute_condition("attribute.ns == 'prod'") == "attribute.ns == 'prod'"


def test_pool_members_are_checked_to_the_letter() -> None:
    for bad in (f"principal://iam.googleapis.com/{POOL}/subject/", f"principalSet://iam.googleapis.com/{POOL}/x",
                f"principalSet://iam.googleapis.com/{POOL}/attribute.a-b/v",
                "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ab/subject/s"):
        with pytest.raises(InvalidArgument):
            validate_member(bad)
    # Other principal forms (workforce pools, deny policies' forms) are left as they were.
    assert validate_member("principal://iam.googleapis.com/locations/global/workforcePools/p/subject/s")
