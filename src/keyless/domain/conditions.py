"""IAM Conditions: CEL expressions compiled once, evaluated against ``request`` and ``resource``.

A condition the evaluator cannot evaluate, or one that could cost more than the limits below allow, is refused
when the policy is written, never ignored later. Every evaluation also runs under a step budget, so that a
condition that reached the store some other way (written by an older keyless, or by hand) ends as an error,
which grants nothing, instead of holding the event loop: CEL macros nest, and the work of nested macros grows
as the product of their list sizes (a 367-character condition took seconds).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from dataclasses import dataclass
from typing import Any

from keyless.errors import InvalidArgument, KeylessError, MalformedData

ALLOWED_ROOTS = frozenset({"request", "resource"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FIELD = "policy.bindings.condition.expression"

# The limits on one condition, all in one place; docs/api.md ("Limits on a condition") explains them.
MAX_EXPRESSION_LENGTH = 12_800  # characters, as Google allows
MAX_TOKENS = 400  # names, literals, operators and brackets; counted before parsing, which costs per token
MAX_NESTING_DEPTH = 250  # levels of the parse tree; the evaluator recurses about six Python frames per level
MAX_COMPREHENSION_NESTING = 2  # macros (all, exists, exists_one, map, filter) inside the body of another
MAX_LITERAL_ELEMENTS = 64  # elements of one list literal, entries of one map literal
EVALUATION_BUDGET = 1_000  # steps per evaluation, and the most the static estimate may reach
# What a step is: evaluating one node of the parse tree, or each element of a list or map made along the
# way, or each STRING_STEP characters of a string made (so values cannot grow without costing steps).
STRING_STEP = 1_024
# A call of matches() costs a step per this many characters of its pattern (compiling it costs that much).
PATTERN_STEP = 16
# A macro over a list whose size the static estimate cannot know is counted as over this many elements.
UNKNOWN_LIST_SIZE = MAX_LITERAL_ELEMENTS

# Parse-tree nodes that pass their only child's value through unchanged.
_PASS_THROUGH = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                           "unary", "member", "primary", "paren_expr"})


class EvaluationBudgetExceeded(KeylessError):
    """Raised inside the evaluator when an evaluation has used its steps. Deliberately none of the exception
    types celpy turns into CEL error values, so it unwinds the whole evaluation."""

    def __init__(self) -> None:
        super().__init__("The condition used its evaluation budget.")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The attributes a condition may read."""

    time: float
    resource_name: str
    resource_type: str
    resource_service: str = "iam.googleapis.com"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one evaluation of a condition found, and what it cost."""

    granted: bool
    steps: int
    error: str = ""  # why there is no boolean result ("" when there is one)
    over_budget: bool = False


class _Meter:
    """Counts the steps of one evaluation (shared by the evaluators of its macro bodies), with ``matches``, one
    of the CEL functions keyless replaces (``_duration`` is the other).

    ``matches`` compiles its pattern (RE2, linear in the text, but compiling costs with the pattern's length),
    so it is charged per PATTERN_STEP characters of pattern. ``duration`` checks its text with RE2 before
    celpy parses it: celpy's own pattern backtracks exponentially (``duration("aaaa…a!")`` with 30 letters
    takes minutes), so only text it will accept quickly reaches it."""

    __slots__ = ("inputs", "last_charged", "limit", "steps")

    def __init__(self, limit: int, inputs: tuple[object, ...] = ()) -> None:
        self.limit = limit
        self.steps = 0
        self.last_charged: object = None
        # The request and resource maps, by identity: read, not made, by the expression.
        self.inputs = frozenset(map(id, inputs))

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.steps > self.limit:
            raise EvaluationBudgetExceeded

    def matches(self, text: Any, pattern: Any) -> Any:
        from celpy.evaluation import function_matches

        self.charge(1 + len(pattern) // PATTERN_STEP if isinstance(pattern, str) else 1)
        return function_matches(text, pattern)


def _duration(value: Any) -> Any:
    if isinstance(value, str) and not _duration_text().fullmatch(value):
        raise MalformedData(f"Invalid duration {value[:100]!r}")
    return _cel().celtypes.DurationType(value)


@dataclass(frozen=True, slots=True)
class _Runtime:
    environment: Any
    celtypes: Any
    tree_type: Any  # lark.Tree
    evaluator: Any  # the budgeted Evaluator class


@functools.cache
def _cel() -> _Runtime:
    """The CEL environment, value types and budgeted evaluator, loaded on first use: importing celpy and
    building its parser take about a quarter of a second, which ``keyless serve`` would otherwise pay at every
    start (half of its start-up) whether or not any policy has a condition."""
    import celpy
    import lark
    from celpy import celtypes
    from celpy.evaluation import Evaluator

    containers = (list, dict)
    texts = (str, bytes)

    class BudgetedEvaluator(Evaluator):
        """celpy's tree-walking evaluator with every node visit charged to a meter.

        Both of lark's public entry points are overridden (``visit``, and ``visit_children``, which would
        otherwise go around ``visit``), and macro bodies get evaluators sharing the same meter."""

        def __init__(self, ast: Any, activation: Any, meter: _Meter) -> None:
            super().__init__(ast, activation)
            self.meter = meter

        def sub_evaluator(self, ast: Any) -> BudgetedEvaluator:
            return BudgetedEvaluator(ast, self.activation, self.meter)

        def visit(self, tree: Any) -> Any:
            meter = self.meter
            meter.steps += 1
            if meter.steps > meter.limit:
                raise EvaluationBudgetExceeded
            meter.last_charged = None
            value = super().visit(tree)
            # A value is charged for its size where it is made or read (the nodes above that only pass it up
            # return the very same object, and are not charged again). Operators return plain lists and
            # strings, not celtypes, hence the built-in types.
            if value is not meter.last_charged:
                if isinstance(value, containers):
                    meter.last_charged = value
                    if id(value) not in meter.inputs:
                        meter.charge(len(value))
                elif isinstance(value, texts) and len(value) >= STRING_STEP:
                    meter.last_charged = value
                    meter.charge(len(value) // STRING_STEP)
            return value

        def visit_children(self, tree: Any) -> list[Any]:
            self.level += 1
            values = []
            try:
                for child in tree.children:
                    values.append(self.visit(child) if isinstance(child, lark.Tree) else child)
            finally:
                self.level -= 1
            return values

    return _Runtime(celpy.Environment(), celtypes, lark.Tree, BudgetedEvaluator)


@functools.cache
def _duration_text() -> Any:
    import re2

    return re2.compile(r"[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+")


class CompiledCondition:
    """A parsed condition, ready to evaluate, with its static ``shape``; ``problem`` says why a stored one can
    never grant."""

    __slots__ = ("_ast", "_program", "expression", "problem", "shape")

    def __init__(self, expression: str, ast: Any, program: Any, shape: Shape | None = None,
                 problem: str = "") -> None:
        self.expression = expression
        self._ast = ast
        self._program = program
        self.shape = shape
        self.problem = problem

    def run(self, ctx: RequestContext, budget: int = EVALUATION_BUDGET) -> Evaluation:
        """Evaluate under ``budget`` steps. An error, a non-boolean result or a spent budget grants nothing
        (Google treats errors as false)."""
        if self._program is None:
            return Evaluation(False, 0, self.problem)
        runtime = _cel()
        inputs = _activation(ctx)
        meter = _Meter(budget, tuple(inputs.values()))
        try:
            activation = self._program.new_activation()
            activation.functions = activation.functions.new_child({"matches": meter.matches, "duration": _duration})
            result = runtime.evaluator(self._ast, activation, meter).evaluate(inputs)
        except EvaluationBudgetExceeded:
            return Evaluation(False, meter.steps, f"exceeds the evaluation budget of {budget} steps", True)
        except Exception as exc:  # celpy raises CEL errors (and RecursionError, MemoryError, ...) as exceptions
            return Evaluation(False, meter.steps, _first_line(exc) or type(exc).__name__)
        if not isinstance(result, runtime.celtypes.BoolType):
            return Evaluation(False, meter.steps, f"evaluates to {_first_line(result)}, not a boolean")
        return Evaluation(bool(result), meter.steps)

    def evaluate(self, ctx: RequestContext) -> bool:
        return self.run(ctx).granted

    def value(self, inputs: dict[str, Any], budget: int = EVALUATION_BUDGET) -> tuple[Any, str]:
        """The expression's value (a Python value: str, bool, int, float, list, dict or None) over ``inputs``
        (JSON-like Python values by root name), under ``budget`` steps; or None and why there is none."""
        if self._program is None:
            return None, self.problem
        runtime = _cel()
        from celpy.adapter import json_to_cel

        activation_inputs = {name: json_to_cel(value) for name, value in inputs.items()}
        # celpy resolves a name beginning "google." as a package (google.protobuf...): the fields of a ``google``
        # input are bound under their dotted names, which it looks up first.
        for key, value in (inputs.get("google") or {}).items():
            activation_inputs[f"google.{key}"] = json_to_cel(value)
        meter = _Meter(budget, tuple(activation_inputs.values()))
        try:
            activation = self._program.new_activation()
            activation.functions = activation.functions.new_child({"matches": meter.matches, "duration": _duration})
            result = runtime.evaluator(self._ast, activation, meter).evaluate(activation_inputs)
        except EvaluationBudgetExceeded:
            return None, f"exceeds the evaluation budget of {budget} steps"
        except Exception as exc:
            return None, _first_line(exc) or type(exc).__name__
        if isinstance(result, Exception):  # celpy returns some CEL errors as values
            return None, _first_line(result) or type(result).__name__
        return _plain(result), ""


def _plain(value: Any) -> Any:
    """A CEL value as plain Python (celpy's types subclass Python's own)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, _cel().celtypes.BoolType):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    for plain in (str, int, float):
        if isinstance(value, plain):
            return plain(value)
    return value if isinstance(value, bytes) else str(value)


def _first_line(value: object) -> str:
    lines = str(value).splitlines()
    return lines[0][:300] if lines else ""


def _activation(ctx: RequestContext) -> dict[str, Any]:
    celtypes = _cel().celtypes
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


@dataclass(frozen=True, slots=True)
class Shape:
    """What the static checks measure of a parsed expression (or of one of its sub-trees)."""

    depth: int  # levels of the parse tree
    comprehension_nesting: int  # macros inside macro bodies, outermost included
    widest_literal: int  # elements of the largest list literal, entries of the largest map literal
    cost: int  # the most steps one evaluation can take, with UNKNOWN_LIST_SIZE for sizes it cannot know
    size: int | None = None  # elements of the list or map this node yields, when known
    items: int = 0  # Tree children (for exprlist and mapinits nodes)


def measure(tree: Any) -> Shape:
    """The static shape of a parsed expression, bottom-up and without recursion (the tree may be deep)."""
    tree_type = _cel().tree_type
    order: list[Any] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(c for c in node.children if isinstance(c, tree_type))
    # Per node: (depth, comprehension nesting, widest literal, cost, size or None, Tree children).
    shapes: dict[int, tuple[int, int, int, int, int | None, int]] = {}
    for node in reversed(order):  # children before their parents
        data = str(node.data)  # lark's Token compares slowly
        kids = [shapes[id(c)] for c in node.children if isinstance(c, tree_type)]
        depth = 1 + max((k[0] for k in kids), default=0)
        nesting = max((k[1] for k in kids), default=0)
        widest = max((k[2] for k in kids), default=0)
        cost = 1 + sum(k[3] for k in kids)
        size: int | None = None
        if data in _PASS_THROUGH:
            if len(kids) == 1:
                size = kids[0][4]
        elif data == "member_dot_arg" or data == "ident_arg":
            name = str(node.children[1] if data == "member_dot_arg" else node.children[0])
            last = node.children[-1]
            args = [c for c in last.children if isinstance(c, tree_type)] if isinstance(last, tree_type) else []
            if data == "member_dot_arg" and name in _MACROS and len(args) == 2:
                target, body = shapes[id(node.children[0])], shapes[id(args[1])]
                count = target[4] if target[4] is not None else UNKNOWN_LIST_SIZE
                nesting = max(target[1], body[1] + 1)
                cost = 1 + target[3] + count * body[3]  # the body runs once per element
                if name in ("map", "filter"):
                    size = count
                    cost += count
            elif name == "matches":
                cost += _pattern_steps(node)
        elif data == "exprlist" or data == "fieldinits":  # arguments and list elements: a list is made of them
            cost += len(kids)
        elif data == "mapinits":  # a map is made of the keys and values
            cost += len(kids) // 2
        elif data == "list_lit" or data == "map_lit":
            items = kids[0][5] if kids else 0
            size = items if data == "list_lit" else items // 2
            widest = max(widest, size)
        shapes[id(node)] = (depth, nesting, widest, cost, size, len(kids))
    return Shape(*shapes[id(tree)])


def _pattern_steps(call: Any) -> int:
    """What a ``matches`` call is charged for the string literals among its arguments (its pattern)."""
    literals = [str(n.children[0]) for n in call.iter_subtrees() if n.data == "literal"]
    return 1 + sum(len(text) for text in literals if text[-1:] in ("'", '"')) // PATTERN_STEP


def _too_many_tokens(expression: str) -> bool:
    """Whether ``expression`` has more than MAX_TOKENS tokens. Parsing is the slow part of compiling (tens of
    microseconds per parse-tree node, and a token can make five or six nodes), so a 12,800-character expression of
    brackets or list elements took seconds to parse; lexing is cheap, and stops at the limit. A text the lexer
    cannot read is left to the parser, which reports it."""
    lark_parser = _cel().environment.cel_parser.CEL_PARSER
    count = 0
    try:
        for _ in itertools.islice(lark_parser.lex(expression), MAX_TOKENS + 1):
            count += 1
    except Exception:
        return False
    return count > MAX_TOKENS


def _check_limits(shape: Shape, field: str = _FIELD) -> None:
    """Refuse an expression whose shape is over one of the limits, naming the limit."""
    if shape.depth > MAX_NESTING_DEPTH:
        raise InvalidArgument(
            f"Condition expression is nested too deeply: its parse tree is {shape.depth} levels deep, over the "
            f"limit on nesting depth of {MAX_NESTING_DEPTH}. Split it into simpler conditions.", field=field)
    if shape.comprehension_nesting > MAX_COMPREHENSION_NESTING:
        raise InvalidArgument(
            f"Condition expression nests macros (all, exists, exists_one, map, filter) "
            f"{shape.comprehension_nesting} deep, over the limit on comprehension nesting of "
            f"{MAX_COMPREHENSION_NESTING}.", field=field)
    if shape.widest_literal > MAX_LITERAL_ELEMENTS:
        raise InvalidArgument(
            f"Condition expression has a list or map literal of {shape.widest_literal} elements, over the limit "
            f"on literal size of {MAX_LITERAL_ELEMENTS}.", field=field)
    if shape.cost > EVALUATION_BUDGET:
        raise InvalidArgument(
            f"Condition expression could take {shape.cost} steps to evaluate, over the evaluation budget of "
            f"{EVALUATION_BUDGET} steps. Use fewer or smaller macros and lists.", field=field)


def _compile(expression: str, roots: frozenset[str], field: str, max_length: int, what: str) -> CompiledCondition:
    """Parse ``expression`` and check it against the limits, reading only ``roots``; raise INVALID_ARGUMENT
    naming ``field`` otherwise."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidArgument(f"{what} must not be empty.", field=field)
    if len(expression) > max_length:
        raise InvalidArgument(
            f"{what} is {len(expression)} characters long, over the limit on expression length "
            f"of {max_length}.", field=field)
    env = _cel().environment
    if _too_many_tokens(expression):
        raise InvalidArgument(
            f"{what} has more than {MAX_TOKENS} tokens, over the limit on expression size of "
            f"{MAX_TOKENS} tokens (names, literals, operators and brackets).", field=field)
    try:
        ast = env.compile(expression)
        program = env.program(ast)
    except Exception as exc:
        raise InvalidArgument(
            f"{what} '{expression}' is not valid CEL: {str(exc).splitlines()[0]}",
            field=field,
        ) from None
    for name in sorted(_free_identifiers(ast)):
        if name not in roots:
            supported = ("request.time, resource.name, resource.type, resource.service" if roots == ALLOWED_ROOTS
                         else ", ".join(sorted(roots)))
            raise InvalidArgument(
                f"{what} '{expression}' uses the attribute '{name}', which keyless does not "
                f"support. Supported attributes: {supported}.",
                field=field,
            )
    shape = measure(ast)
    _check_limits(shape, field)
    return CompiledCondition(expression, ast, program, shape)


@functools.lru_cache(maxsize=4096)
def compile_condition(expression: str) -> CompiledCondition:
    """Parse and check an expression (as ``setIamPolicy`` receives it); raise INVALID_ARGUMENT if keyless
    cannot evaluate it or it is over one of the limits."""
    compiled = _compile(expression, ALLOWED_ROOTS, _FIELD, MAX_EXPRESSION_LENGTH, "Condition expression")
    probe = RequestContext(time=1_700_000_000.0, resource_name="projects/_/serviceAccounts/probe",
                           resource_type="iam.googleapis.com/ServiceAccount")
    outcome = compiled.run(probe)
    if outcome.error:
        raise InvalidArgument(f"Condition expression '{expression}' cannot be evaluated by keyless: {outcome.error}",
                              field=_FIELD)
    return compiled


@functools.lru_cache(maxsize=4096)
def compile_expression(expression: str, roots: frozenset[str], field: str, max_length: int) -> CompiledCondition:
    """An expression over other inputs than a condition's (a workload identity provider's attribute mapping and
    condition read ``assertion``, ``google`` and ``attribute``), under the same limits and budget: evaluate it
    with ``CompiledCondition.value``."""
    return _compile(expression, roots, field, max_length, "Expression")


@functools.lru_cache(maxsize=4096)
def load_condition(expression: str) -> CompiledCondition:
    """A condition as the store holds it, for evaluation: never raises. It was checked when it was written, but
    the store may hold one from before a limit existed, or one written around ``setIamPolicy``; such a
    condition still runs under the step budget, and one that cannot even be parsed never grants."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_LENGTH:
        return CompiledCondition(str(expression)[:100], None, None, problem="over the limit on expression length")
    env = _cel().environment
    if _too_many_tokens(expression):
        return CompiledCondition(expression, None, None, problem="over the limit on expression size")
    try:
        ast = env.compile(expression)
        program = env.program(ast)
    except Exception as exc:
        return CompiledCondition(expression, None, None, problem=f"not valid CEL: {_first_line(exc)}")
    shape = measure(ast)
    if shape.depth > MAX_NESTING_DEPTH:  # the budget does not bound the evaluator's recursion
        return CompiledCondition(expression, None, None, shape, "over the limit on nesting depth")
    return CompiledCondition(expression, ast, program, shape)
