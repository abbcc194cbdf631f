"""IAM Conditions: compile_condition accepts what keyless can evaluate, evaluates it correctly, refuses the rest."""

from __future__ import annotations

import pytest

from keyless.domain.conditions import MAX_EXPRESSION_LENGTH, RequestContext, compile_condition
from keyless.errors import InvalidArgument

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z
STAMP = "2027-01-15T08:00:00Z"
SA_NAME = "projects/-/serviceAccounts/108000000000000000001"
SA_TYPE = "iam.googleapis.com/ServiceAccount"
PROJECT_TYPE = "cloudresourcemanager.googleapis.com/Project"


def ctx(time: float = T, name: str = SA_NAME, rtype: str = SA_TYPE,
        service: str = "iam.googleapis.com") -> RequestContext:
    return RequestContext(time=time, resource_name=name, resource_type=rtype, resource_service=service)


@pytest.mark.parametrize(("expression", "before", "at", "after"), [
    (f'request.time < timestamp("{STAMP}")', True, False, False),
    (f'request.time <= timestamp("{STAMP}")', True, True, False),
    (f'request.time > timestamp("{STAMP}")', False, False, True),
    (f'request.time >= timestamp("{STAMP}")', False, True, True),
    (f'timestamp("{STAMP}") > request.time', True, False, False),
    (f'!(request.time < timestamp("{STAMP}"))', False, True, True),
    ('request.time < timestamp("2027-01-15T09:00:00+01:00")', True, False, False),
])
def test_request_time_on_both_sides_of_a_timestamp(expression: str, before: bool, at: bool, after: bool) -> None:
    compiled = compile_condition(expression)
    assert compiled.expression == expression
    assert compiled.evaluate(ctx(T - 1)) is before
    assert compiled.evaluate(ctx(T)) is at
    assert compiled.evaluate(ctx(T + 1)) is after
    assert compiled.evaluate(ctx(T - 86400 * 365)) is before
    assert compiled.evaluate(ctx(T + 86400 * 365)) is after


def test_request_time_window() -> None:
    compiled = compile_condition(
        f'request.time >= timestamp("2027-01-01T00:00:00Z") && request.time < timestamp("{STAMP}")')
    assert not compiled.evaluate(ctx(1_798_761_600.0 - 1))  # 2026-12-31T23:59:59Z
    assert compiled.evaluate(ctx(1_798_761_600.0))
    assert compiled.evaluate(ctx(T - 1))
    assert not compiled.evaluate(ctx(T))


def test_request_time_with_durations() -> None:
    compiled = compile_condition(f'request.time - timestamp("{STAMP}") < duration("3600s")')
    assert compiled.evaluate(ctx(T + 3599))
    assert not compiled.evaluate(ctx(T + 3600))


def test_request_time_accessors() -> None:
    compiled = compile_condition('request.time.getHours("UTC") >= 9')
    assert not compiled.evaluate(ctx(T))  # 08:00 UTC
    assert compiled.evaluate(ctx(T + 3600))


@pytest.mark.parametrize(("expression", "matching", "other"), [
    (f'resource.name == "{SA_NAME}"', ctx(), ctx(name="projects/-/serviceAccounts/2")),
    ('resource.name.startsWith("projects/-/serviceAccounts/")', ctx(), ctx(name="projects/keyless-dev")),
    ('resource.name.endsWith("001")', ctx(), ctx(name="projects/-/serviceAccounts/2")),
    (f'resource.type == "{SA_TYPE}"', ctx(), ctx(name="projects/p", rtype=PROJECT_TYPE)),
    (f'resource.type != "{SA_TYPE}"', ctx(name="projects/p", rtype=PROJECT_TYPE), ctx()),
    ('resource.service == "iam.googleapis.com"', ctx(), ctx(service="cloudresourcemanager.googleapis.com")),
    (f'resource.type == "{SA_TYPE}" && resource.name.endsWith("001")', ctx(), ctx(name="projects/-/x/2")),
    (f'resource.type == "{PROJECT_TYPE}" || resource.name.endsWith("001")', ctx(), ctx(name="projects/-/x/2")),
    (f'["{SA_TYPE}", "x"].exists(t, t == resource.type)', ctx(), ctx(rtype=PROJECT_TYPE)),
    ('resource.name.matches("^projects/-/serviceAccounts/[0-9]+$")', ctx(), ctx(name="projects/keyless-dev")),
])
def test_resource_attributes(expression: str, matching: RequestContext, other: RequestContext) -> None:
    compiled = compile_condition(expression)
    assert compiled.evaluate(matching) is True
    assert compiled.evaluate(other) is False


@pytest.mark.parametrize("expression", ["true", "false", "1 == 1", '"a" < "b"'])
def test_constant_boolean_expressions(expression: str) -> None:
    assert compile_condition(expression).evaluate(ctx()) is eval(expression.replace("true", "True")
                                                                   .replace("false", "False"))


@pytest.mark.parametrize("expression", [
    "request.time <", "request.time < timestamp(", "(((", "resource.name ==", "&& true", "request..time",
    'resource.name == "unterminated', "resource.name = 'x'", "1 +", "}{",
])
def test_invalid_cel_is_rejected(expression: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        compile_condition(expression)
    assert info.value.field == "policy.bindings.condition.expression"
    assert info.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("expression", [
    "foo.bar == 1", "foo", 'api.getAttribute("x", "") == "y"', "x == 1", "request.time < deadline",
    "[1, 2].exists(x, x == y)", "origin.ip == '1.2.3.4'", 'destination.port == 443',
    "resource.name == name",
])
def test_unknown_attributes_are_rejected(expression: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        compile_condition(expression)
    assert info.value.field == "policy.bindings.condition.expression"


@pytest.mark.parametrize("expression", [
    'request.auth.claims.email == "a@b.com"', 'resource.labels["env"] == "prod"', 'request.path == "/"',
])
def test_unsupported_members_of_known_roots_are_rejected(expression: str) -> None:
    with pytest.raises(InvalidArgument):
        compile_condition(expression)


@pytest.mark.parametrize("expression", [
    "resource.name", "request.time", "resource.type", "1 + 2", '"true"', "1", "[true]", "{'a': true}",
    'timestamp("2030-01-01T00:00:00Z")', "null", 'duration("1s")', "1.0",
])
def test_non_boolean_results_are_rejected(expression: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        compile_condition(expression)
    assert info.value.field == "policy.bindings.condition.expression"


@pytest.mark.parametrize("expression", ["", "   ", "\n"])
def test_empty_expressions_are_rejected(expression: str) -> None:
    with pytest.raises(InvalidArgument):
        compile_condition(expression)


def test_too_long_expressions_are_rejected() -> None:
    expression = "true" + " && true" * (MAX_EXPRESSION_LENGTH // 8)
    assert len(expression) > MAX_EXPRESSION_LENGTH
    with pytest.raises(InvalidArgument):
        compile_condition(expression)


def test_a_runtime_error_grants_nothing_instead_of_raising() -> None:
    """A condition that is well-typed but fails for some request evaluates to false (Google's rule).

    ``int(resource.name)`` type-checks (string to int) but fails for a non-numeric name; after 2024 the
    left operand is false, so the right one decides.
    """
    compiled = compile_condition('request.time < timestamp("2024-01-01T00:00:00Z") || int(resource.name) > 0')
    assert compiled.evaluate(ctx(time=1_600_000_000.0)) is True
    assert compiled.evaluate(ctx(time=T)) is False
