"""One error tree: every exception keyless raises toward a caller derives from ``KeylessError`` and renders
itself; OAuth errors are a branch that keeps OAuth's shape; JWT failures are typed; a 401 names its scheme."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import keyless
from keyless.crypto.jwt import BadSignature, ExpiredJwt, JwtError, MalformedJwt, PrematureJwt, WrongAudience
from keyless.errors import KeylessError, OAuthError, Unauthenticated

# Process exits at start-up (a port in use, a data dir in use) are SystemExit on purpose: they end `keyless
# serve` with one line, they never answer a request. The CLI's own errors are the command line's business.
NOT_WIRE_LAYERS = ("cli", "pytest_plugin", "__main__")


def test_every_exception_class_derives_from_the_one_root() -> None:
    outside = []
    for info in pkgutil.walk_packages(keyless.__path__, "keyless."):
        if info.name.split(".")[1] in NOT_WIRE_LAYERS:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
                    and not issubclass(obj, KeylessError | SystemExit)):
                outside.append(f"{info.name}.{name}")
    assert not outside, outside


def test_oauth_errors_are_a_branch_with_their_own_shape() -> None:
    error = OAuthError("invalid_client", "Unauthorized", http_status=401)
    assert isinstance(error, KeylessError)
    assert error.to_json() == {"error": "invalid_client", "error_description": "Unauthorized"}
    assert error.status == "UNAUTHENTICATED" and error.headers["WWW-Authenticate"].startswith("Basic")
    assert OAuthError("invalid_grant", "Bad Request").headers == {}


def test_a_401_names_its_scheme() -> None:
    assert Unauthenticated().headers == {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}


def test_jwt_failures_are_typed() -> None:
    for cls in (MalformedJwt, BadSignature, WrongAudience, ExpiredJwt, PrematureJwt):
        assert issubclass(cls, JwtError) and issubclass(cls, KeylessError)
        assert cls("x").http_status == 401


def test_every_raise_names_an_error_of_the_tree() -> None:
    """Every ``raise SomeError(...)`` outside the command line raises a class of the tree (SystemExit at start-up
    excepted, and the web library's own signals that its server answers, such as ClientDisconnect)."""
    import ast
    from pathlib import Path

    root = Path(keyless.__file__).parent
    library_signals = {"SystemExit", "ClientDisconnect", "StopAsyncIteration", "CancelledError"}
    outside = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0].removesuffix(".py") in NOT_WIRE_LAYERS:
            continue
        module = importlib.import_module("keyless." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = call.attr if isinstance(call, ast.Attribute) else call.id if isinstance(call, ast.Name) else None
            if name is None or name in library_signals:
                continue
            owner: object = module
            if isinstance(call, ast.Attribute) and isinstance(call.value, ast.Name):
                owner = getattr(module, call.value.id, None)  # raise module.Error(...)
            target = getattr(owner, name, None)
            if inspect.isclass(target):
                if not issubclass(target, KeylessError | SystemExit):
                    outside.append(f"{rel}:{node.lineno} {name}")
            elif name[:1].isupper():
                outside.append(f"{rel}:{node.lineno} {name} (not found)")
    assert not outside, outside
