"""The limits on one IAM condition: refused at compile time naming the limit, a step budget at evaluation time,
and realistic conditions well inside both (issue 14 item 4)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.domain.conditions import (
    EVALUATION_BUDGET,
    MAX_COMPREHENSION_NESTING,
    MAX_EXPRESSION_LENGTH,
    MAX_LITERAL_ELEMENTS,
    MAX_NESTING_DEPTH,
    MAX_TOKENS,
    RequestContext,
    compile_condition,
    load_condition,
)
from keyless.domain.policy import load_stored_policy
from keyless.errors import InvalidArgument

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SA_NAME = "projects/-/serviceAccounts/108000000000000000001"
SA_TYPE = "iam.googleapis.com/ServiceAccount"
CTX = RequestContext(time=T, resource_name=SA_NAME, resource_type=SA_TYPE)
NINE = "[1,2,3,4,5,6,7,8,9]"


def names(count: int) -> list[str]:
    return [f'"projects/-/serviceAccounts/robot-{i}@some-project.iam.gserviceaccount.com"' for i in range(count)]


def nested_all(levels: int, items: str = NINE) -> str:
    expression = "true"
    for level in reversed(range(levels)):
        expression = f"{items}.all(v{level}, {expression})"
    return expression


def doubling(seed: str, times: int) -> str:
    """A value doubled ``times`` times by chained macros: cheap to write, exponential in size."""
    return seed + "".join(".map(x, x + x)" for _ in range(times)) + ".size() > 0"


# ---------------------------------------------------------------- refused at setIamPolicy, naming the limit

@pytest.mark.parametrize(("expression", "limit"), [
    ("true" + " && true" * (MAX_EXPRESSION_LENGTH // 8), "limit on expression length"),
    # 12,000 characters of brackets or list elements took seconds to parse: tokens are counted first.
    ("(" * 6000 + "true" + ")" * 6000, "limit on expression size"),
    ("[" + ", ".join(["1"] * MAX_TOKENS) + "] == []", "limit on expression size"),
    ("!" * MAX_NESTING_DEPTH + "true", "limit on nesting depth"),
    ("(" * 30 + "true" + ")" * 30, "limit on nesting depth"),
    (nested_all(MAX_COMPREHENSION_NESTING + 1, "[1]"), "limit on comprehension nesting"),
    ("[1].exists(a, [1].map(b, [1].filter(c, true)).size() > 0)", "limit on comprehension nesting"),
    (f"resource.name in [{', '.join(names(MAX_LITERAL_ELEMENTS + 1))}]", "limit on literal size"),
    ("{" + ", ".join(f'"k{i}": true' for i in range(MAX_LITERAL_ELEMENTS + 1)) + '}["k0"]', "limit on literal size"),
    (nested_all(2), "evaluation budget"),
    (f"{NINE}.exists(a, {NINE}.exists(b, {NINE}.exists(c, true)))", "limit on comprehension nesting"),
    # The probe time (2023) takes the cheap branch; the estimate counts the costly one too.
    (f'request.time < timestamp("2024-01-01T00:00:00Z") ? true : {nested_all(2)}', "evaluation budget"),
    # Small to write, small to estimate, but its values double at each step: the budgeted probe stops it.
    (doubling("[[1, 2, 3]]", 30), "evaluation budget"),
    (doubling('["' + "x" * 100 + '"]', 30), "evaluation budget"),
    # 367 characters that held every request for seconds.
    ('resource.type == "iam.googleapis.com/ServiceAccount" && request.time < timestamp("2100-01-01T00:00:00Z") && '
     + nested_all(5), "limit on comprehension nesting"),
])
def test_a_condition_over_a_limit_is_refused_naming_the_limit(expression: str, limit: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        compile_condition(expression)
    assert limit in info.value.message, info.value.message
    assert info.value.field == "policy.bindings.condition.expression"


def test_the_limits_leave_room_for_each_other() -> None:
    """A list literal as long as allowed still fits the budget in a realistic ``in`` test, with margin."""
    at_limit = compile_condition(f"resource.name in [{', '.join(names(MAX_LITERAL_ELEMENTS))}]")
    assert at_limit.shape is not None and at_limit.shape.cost < EVALUATION_BUDGET * 0.8


# ---------------------------------------------------------------- stored conditions: the budget at run time

@pytest.mark.parametrize("expression", [
    nested_all(5),
    nested_all(3, "[" + ", ".join(str(i) for i in range(40)) + "]"),
    doubling("[[1, 2, 3]]", 35),
    doubling('["' + "x" * 100 + '"]', 35),
    f"{NINE}.all(a, {NINE}.all(b, resource.name.matches(string(a) + string(b) + \"(x|y)*\" + \"{'z' * 2000}\")))",
    " && ".join(['request.time.getHours("UTC") >= 8'] * 36),
])
def test_a_stored_condition_over_budget_stops_at_the_budget_and_grants_nothing(expression: str) -> None:
    """A condition written around setIamPolicy (an older keyless, a database edited by hand) is loaded
    leniently and evaluated under the step budget: it ends as an error, never a grant or a long stall."""
    outcome = load_condition(expression).run(CTX)
    assert outcome.over_budget
    assert not outcome.granted
    assert outcome.steps > EVALUATION_BUDGET
    assert "evaluation budget" in outcome.error


def test_a_stored_condition_over_budget_denies_in_is_allowed() -> None:
    from keyless.domain.policy import Principal, is_allowed

    owner = Principal("user", "owner@example.com")
    stored = load_stored_policy({"version": 3, "bindings": [{
        "role": "roles/iam.serviceAccountTokenCreator", "members": [owner.member],
        "condition": {"title": "t", "expression": nested_all(5)}}]}, "ACAB")
    assert not is_allowed([stored], owner.identities(), "iam.serviceAccounts.getAccessToken", CTX)
    compiled = stored.bindings[0].compiled_condition()
    assert compiled is not None and compiled.run(CTX).over_budget


@pytest.mark.parametrize("expression", [
    "foo.bar == 1", "request.time <", "resource.name", "!" * (MAX_NESTING_DEPTH + 10) + "true",
    "true" + " && true" * (MAX_EXPRESSION_LENGTH // 8), "(" * 6000 + "true" + ")" * 6000,
])
def test_a_stored_condition_keyless_would_refuse_grants_nothing_instead_of_failing_the_request(
        expression: str) -> None:
    from keyless.domain.policy import Principal, is_allowed

    owner = Principal("user", "owner@example.com")
    stored = load_stored_policy({"version": 3, "bindings": [{
        "role": "roles/iam.serviceAccountTokenCreator", "members": [owner.member],
        "condition": {"title": "t", "expression": expression}}]}, "ACAB")
    assert not is_allowed([stored], owner.identities(), "iam.serviceAccounts.getAccessToken", CTX)


def test_a_condition_at_the_depth_limit_evaluates_from_deep_in_a_stack() -> None:
    """The depth limit keeps the evaluator's recursion inside Python's limit, with room for the server's own
    frames below it (asyncio, Starlette, the service)."""
    one = compile_condition("!true").shape
    assert one is not None
    negations = MAX_NESTING_DEPTH - one.depth + 1  # each further "!" is one level deeper
    compiled = compile_condition("!" * negations + "true")
    assert compiled.shape is not None and compiled.shape.depth == MAX_NESTING_DEPTH

    def from_depth(frames: int) -> object:
        return compiled.run(CTX) if frames == 0 else from_depth(frames - 1)

    outcome = from_depth(300)
    assert outcome.error == "" and outcome.granted is (negations % 2 == 0)


def test_duration_text_is_checked_in_linear_time() -> None:
    """celpy's duration pattern backtracks exponentially: ``duration("aaaa…a!")`` with 64 letters would never
    finish. keyless checks the text with RE2 first. Run in a subprocess so a regression fails this test (by its
    timeout) instead of hanging the suite."""
    code = (
        "from keyless.domain.conditions import compile_condition, load_condition, RequestContext\n"
        "from keyless.errors import InvalidArgument\n"
        "expression = 'duration(\"' + 'a' * 64 + '!\") > duration(\"1s\")'\n"
        "try:\n"
        "    compile_condition(expression)\n"
        "    raise SystemExit('accepted')\n"
        "except InvalidArgument as exc:\n"
        "    assert 'Invalid duration' in exc.message, exc.message\n"
        "outcome = load_condition(expression).run(RequestContext(0.0, 'projects/p', 'x'))\n"
        "assert not outcome.granted and 'Invalid duration' in outcome.error, outcome\n"
        "assert compile_condition('duration(\"1h30m\") > duration(\"5400s\") || true').evaluate("
        "RequestContext(0.0, 'projects/p', 'x'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- realistic conditions pass, with margin

REALISTIC = [
    'request.time < timestamp("2030-01-01T00:00:00Z")',
    'request.time > timestamp("2027-01-01T00:00:00Z") && request.time < timestamp("2027-02-01T00:00:00Z")',
    # Google's business-hours example.
    'request.time.getHours("Europe/Berlin") >= 9 && request.time.getHours("Europe/Berlin") <= 17 && '
    'request.time.getDayOfWeek("Europe/Berlin") >= 1 && request.time.getDayOfWeek("Europe/Berlin") <= 5',
    'request.time - timestamp("2027-01-15T00:00:00Z") < duration("86400s")',
    'resource.name.startsWith("projects/-/serviceAccounts/") && resource.type == "iam.googleapis.com/ServiceAccount"',
    'resource.name.endsWith("001") || resource.service == "cloudresourcemanager.googleapis.com"',
    'resource.name.matches("^projects/-/serviceAccounts/[0-9]+$")',
    f"resource.name in [{', '.join(names(MAX_LITERAL_ELEMENTS))}]",
    f"!(resource.name in [{', '.join(names(10))}]) && request.time < timestamp(\"2030-01-01T00:00:00Z\")",
    " || ".join(f"resource.name == {name}" for name in names(45)),
    " && ".join(f'request.time < timestamp("20{30 + i}-01-01T00:00:00Z")' for i in range(25)),
    f"[{', '.join(names(20))}].exists(n, resource.name == n)",
    '["projects/-/serviceAccounts/1", "projects/-/serviceAccounts/2"].exists(p, resource.name.startsWith(p))',
    '["projects/-/", "projects/keyless-dev/"].exists(p, ["serviceAccounts/1", "serviceAccounts/2"].exists('
    's, resource.name.startsWith(p + s)))',
    'request.time < timestamp("2030-01-01T00:00:00Z") ? resource.type == "iam.googleapis.com/ServiceAccount" : false',
    "(((((((" + 'resource.name.startsWith("projects/") && (request.time < timestamp("2030-01-01T00:00:00Z")'
    + " || false)" + ")))))))",
    'has(resource.name) && size(resource.name) < 200 && resource.name.contains("serviceAccounts")',
]


@pytest.mark.parametrize("expression", REALISTIC)
def test_realistic_conditions_are_accepted_and_evaluate_within_their_estimate(expression: str) -> None:
    compiled = compile_condition(expression)
    assert compiled.shape is not None and compiled.shape.cost <= EVALUATION_BUDGET
    for ctx in (CTX, RequestContext(T + 86400 * 400, "projects/keyless-dev", "x", "cloudresourcemanager.googleapis.com")):
        outcome = compiled.run(ctx)
        assert outcome.error == "", outcome
        assert outcome.steps <= compiled.shape.cost  # the estimate is an upper bound


@dataclass(frozen=True)
class Clause:
    """A CEL expression with the Python that says what it evaluates to."""

    text: str
    value: Callable[[RequestContext], bool]


ATOMS = [
    Clause('request.time < timestamp("2027-01-15T08:00:00Z")', lambda c: c.time < T),
    Clause('request.time >= timestamp("2027-01-01T00:00:00Z")', lambda c: c.time >= 1_798_761_600.0),
    Clause(f'resource.type == "{SA_TYPE}"', lambda c: c.resource_type == SA_TYPE),
    Clause('resource.name.startsWith("projects/-/serviceAccounts/")',
           lambda c: c.resource_name.startswith("projects/-/serviceAccounts/")),
    Clause('resource.name.endsWith("1")', lambda c: c.resource_name.endswith("1")),
    Clause(f'resource.name in ["{SA_NAME}", "projects/keyless-dev"]',
           lambda c: c.resource_name in (SA_NAME, "projects/keyless-dev")),
    Clause('request.time.getHours("UTC") >= 8', lambda c: (int(c.time) // 3600) % 24 >= 8),
]


def _clauses() -> st.SearchStrategy[Clause]:
    """&& / || chains of up to a dozen parts, nested in parentheses, over atoms and negated atoms: at most 16
    clauses (more than the 13 that Google's reported cap of 12 logical operators allows), so that even the
    costliest mix stays inside the budget."""
    atom = st.sampled_from(ATOMS)
    negated = atom.map(lambda p: Clause(f"!({p.text})", lambda c, p=p: not p.value(c)))

    def chains(children: st.SearchStrategy[Clause]) -> st.SearchStrategy[Clause]:
        return st.tuples(st.sampled_from(["&&", "||"]), st.lists(children, min_size=2, max_size=12)).map(
            lambda op_parts: Clause(
                "(" + f" {op_parts[0]} ".join(p.text for p in op_parts[1]) + ")",
                (lambda c, op=op_parts[0], parts=op_parts[1]:
                 all(p.value(c) for p in parts) if op == "&&" else any(p.value(c) for p in parts))))

    return st.recursive(atom | negated, chains, max_leaves=16)


CONTEXTS = st.builds(
    RequestContext,
    time=st.floats(min_value=1_790_000_000.0, max_value=1_810_000_000.0),
    resource_name=st.sampled_from([SA_NAME, "projects/keyless-dev", "projects/-/serviceAccounts/2"]),
    resource_type=st.sampled_from([SA_TYPE, "cloudresourcemanager.googleapis.com/Project"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clause=_clauses(), ctx=CONTEXTS)
def test_boolean_combinations_of_clauses_pass_and_evaluate_as_written(
        clause: Clause, ctx: RequestContext) -> None:
    compiled = compile_condition(clause.text)
    outcome = compiled.run(ctx)
    assert outcome.error == "", (clause.text, outcome)
    assert outcome.granted is clause.value(ctx)
    assert compiled.shape is not None and outcome.steps <= compiled.shape.cost <= EVALUATION_BUDGET
