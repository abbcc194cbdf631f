"""IAM Conditions: CEL expressions compiled once, evaluated against ``request`` and ``resource``.

A condition the evaluator cannot evaluate is refused when the policy is written, never ignored later.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from keyless.errors import InvalidArgument

ALLOWED_ROOTS = frozenset({"request", "resource"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
MAX_EXPRESSION_LENGTH = 12_800


@functools.cache
def _cel() -> tuple[Any, Any]:
    """The CEL environment and value types, loaded on first use: importing celpy and building its parser take
    about a quarter of a second, which ``keyless serve`` would otherwise pay at every start (half of its
    start-up) whether or not any policy has a condition."""
    import celpy
    from celpy import celtypes

    return celpy.Environment(), celtypes


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The attributes a condition may read."""

    time: float
    resource_name: str
    resource_type: str
    resource_service: str = "iam.googleapis.com"


class CompiledCondition:
    __slots__ = ("_program", "expression")

    def __init__(self, expression: str, program: Any) -> None:
        self.expression = expression
        self._program = program

    def evaluate(self, ctx: RequestContext) -> bool:
        # An expression that errors at run time grants nothing (Google treats errors as false).
        try:
            result = self._program.evaluate(_activation(ctx))
        except Exception:
            return False
        return isinstance(result, _cel()[1].BoolType) and bool(result)


def _activation(ctx: RequestContext) -> dict[str, Any]:
    celtypes = _cel()[1]
    when = dt.datetime.fromtimestamp(ctx.time, tz=dt.UTC)
    return {
        "request": celtypes.MapType({celtypes.StringType("time"): celtypes.TimestampType(when)}),
        "resource": celtypes.MapType({
            celtypes.StringType("name"): celtypes.StringType(ctx.resource_name),
            celtypes.StringType("type"): celtypes.StringType(ctx.resource_type),
            celtypes.StringType("service"): celtypes.StringType(ctx.resource_service),
        }),
    }


def _free_identifiers(tree: Any) -> set[str]:
    """Identifiers the expression reads from its environment (macro variables excluded)."""
    names: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "ident":
            names.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) >= 3 and str(node.children[1]) in _MACROS:
            first = node.children[2].children[0] if node.children[2].children else None
            if first is not None:
                bound.update(str(n.children[0]) for n in first.iter_subtrees() if n.data == "ident")
    return names - bound


@functools.lru_cache(maxsize=4096)
def compile_condition(expression: str) -> CompiledCondition:
    """Parse and check an expression; raise INVALID_ARGUMENT if keyless cannot evaluate it."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidArgument("Condition expression must not be empty.", field="policy.bindings.condition.expression")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidArgument("Condition expression is too long.", field="policy.bindings.condition.expression")
    env, celtypes = _cel()
    try:
        ast = env.compile(expression)
        program = env.program(ast)
    except Exception as exc:
        raise InvalidArgument(
            f"Condition expression '{expression}' is not valid CEL: {str(exc).splitlines()[0]}",
            field="policy.bindings.condition.expression",
        ) from None
    for name in sorted(_free_identifiers(ast)):
        if name not in ALLOWED_ROOTS:
            raise InvalidArgument(
                f"Condition expression '{expression}' uses the attribute '{name}', which keyless does not "
                "support. Supported attributes: request.time, resource.name, resource.type, resource.service.",
                field="policy.bindings.condition.expression",
            )
    compiled = CompiledCondition(expression, program)
    probe = RequestContext(time=1_700_000_000.0, resource_name="projects/_/serviceAccounts/probe",
                           resource_type="iam.googleapis.com/ServiceAccount")
    result: object
    try:
        result = program.evaluate(_activation(probe))
    except Exception as exc:  # celpy raises for some type errors instead of returning them
        result = exc
    if not isinstance(result, celtypes.BoolType):
        raise InvalidArgument(
            f"Condition expression '{expression}' cannot be evaluated by keyless: "
            f"{str(result).splitlines()[0][:300]}",
            field="policy.bindings.condition.expression",
        )
    return compiled
