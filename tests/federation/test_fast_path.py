"""The fast path of attribute mappings and conditions (``keyless.domain.federation.fast_path``) answers exactly as
CEL does, or not at all: each expression is evaluated both ways over claims where it answers and where it must
fall back (a missing claim, another type, another form)."""

from __future__ import annotations

from typing import Any

import pytest

from keyless.domain.conditions import compile_expression
from keyless.domain.federation import CONDITION_ROOTS, FALLBACK, evaluate, fast_path

CLAIMS: list[dict[str, Any]] = [
    {"sub": "system:serviceaccount:prod:builder", "kubernetes.io": {"namespace": "prod"}, "repository": "org/repo",
     "groups": ["admins", "dev"], "ref": "refs/heads/main", "n": 3, "nested": {"a": {"b": "deep"}}},
    {"sub": "x", "kubernetes.io": {"namespace": "staging"}, "groups": ["dev"], "repository": "o'r\"g"},
    {"sub": 7, "kubernetes.io": "not a map", "groups": ["dev", 3], "ref": None},
    {},
]
FAST = [
    "assertion.sub", " assertion.sub ", "assertion['kubernetes.io'].namespace", 'assertion["kubernetes.io"]["namespace"]',
    "assertion.nested.a.b", "assertion.repository == 'org/repo'", "assertion.sub != \"x\"",
    "assertion.ref in ['refs/heads/main', 'refs/heads/dev']",
    "'admins' in assertion.groups", "assertion['kubernetes.io'].namespace in [\"prod\", 'staging']",
    "assertion.missing == 'x'",
]
NOT_FAST = ["'org/repo' == assertion.repository", "assertion.sub + 'x'", "assertion.sub == 'a' || true", "size(assertion.sub) > 0", "has(assertion.sub)",
            "assertion.n == 3", "assertion.sub == 'a\\'b'", "assertion.sub.startsWith('x')", "request.time"]


@pytest.mark.parametrize("expression", FAST)
@pytest.mark.parametrize("claims", range(len(CLAIMS)))
def test_the_fast_path_answers_as_cel(expression: str, claims: int) -> None:
    inputs = {"assertion": CLAIMS[claims]}
    fast = fast_path(expression, CONDITION_ROOTS)
    assert fast is not None, expression
    cel_value, cel_error = compile_expression(expression, CONDITION_ROOTS, "f", 4096).value(inputs)
    answer = fast(inputs)
    if answer is not FALLBACK:
        assert not cel_error and answer == cel_value and type(answer) is type(cel_value), (answer, cel_value)
    assert evaluate(expression, CONDITION_ROOTS, "f", 4096, inputs) == (cel_value, cel_error)


def test_the_fast_path_answers_the_common_cases() -> None:
    inputs = {"assertion": CLAIMS[0]}
    for expression in FAST[:-1]:
        assert fast_path(expression, CONDITION_ROOTS)(inputs) is not FALLBACK, expression  # type: ignore[misc]


@pytest.mark.parametrize("expression", NOT_FAST)
def test_other_forms_go_to_cel(expression: str) -> None:
    assert fast_path(expression, CONDITION_ROOTS) is None


def test_conditions_over_attributes_and_google() -> None:
    inputs = {"assertion": {}, "google": {"subject": "s", "groups": ["admins"]}, "attribute": {"namespace": "prod"}}
    for expression, expected in (("attribute.namespace == 'prod'", True), ("'admins' in google.groups", True),
                                 ("google.subject != 's'", False), ("attribute.namespace in ['dev']", False)):
        assert evaluate(expression, CONDITION_ROOTS, "f", 4096, inputs) == (expected, "")
        assert compile_expression(expression, CONDITION_ROOTS, "f", 4096).value(inputs) == (expected, "")
