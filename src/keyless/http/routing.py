"""The route table's matcher: each entry is one HTTP method, one path template and the handler of that one
operation.

A template's parameters (``{account}``) match one path segment up to a ``:`` (names, emails and ids hold
neither ``/`` nor ``:``), so ``{account}:signBlob`` is the account and its verb; ``{name:path}`` matches the rest
of the path, slashes and colons included. A path that no template matches is a 404; a path that templates
match, none of them with the request's method, is a 405 whose ``Allow`` lists every method those templates
take.

An entry may name the Google API its operation belongs to (``Route.api``); the handler's request then carries it
(``request.scope[API_SCOPE_KEY]``), so ``--enforce-services`` knows the API without looking at the path again.

The lookup is indexed by the text after a path's last ``:`` (``:generateAccessToken``), or else by its last
segment, so a credential verb or ``/token`` is tried against its own template and no other.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import MalformedData

Endpoint = Callable[[Request], Awaitable[Response]]
_PARAM = re.compile(r"\{(\w+)(:path)?\}")


@dataclass(frozen=True, slots=True)
class CredentialVerb:
    """The handler of an IAM Credentials verb: answered by the edge from the raw ASGI messages
    (``keyless.http.credentials.CredentialVerbs``), the one route that takes no ``Request``."""

    verb: str


Handler = Endpoint | CredentialVerb


class Route(NamedTuple):
    method: str
    template: str
    handler: Handler
    # The Google API the operation belongs to (``iam.googleapis.com`` ...): with ``--enforce-services`` its caller's
    # consumer project must have it enabled (``keyless.http.common.api_caller``). None: never refused for that.
    api: str | None = None


API_SCOPE_KEY = "keyless.api"  # where a handler's request finds its route's ``api``


class _ApiEndpoint:
    """A route's handler that tells its request which API the route belongs to."""

    __slots__ = ("api", "endpoint")

    def __init__(self, endpoint: Endpoint, api: str) -> None:
        self.endpoint = endpoint
        self.api = api

    async def __call__(self, request: Request) -> Response:
        request.scope[API_SCOPE_KEY] = self.api
        return await self.endpoint(request)


# The handler of a request and its template's match (``match["account"]``, ``match.groupdict()``); without a
# handler, the methods the request's path takes (none: no template matches it). A plain tuple: this is on every
# request's way.
Match = tuple[Handler | None, re.Match[str] | None, tuple[str, ...]]
NOT_FOUND: Match = (None, None, ())


# A template's pattern and its handler per method (a plain tuple: unpacked on every request's way).
_Template = tuple[re.Pattern[str], dict[str, Handler]]


def _compile(template: str) -> re.Pattern[str]:
    out, end = [], 0
    for param in _PARAM.finditer(template):
        out.append(re.escape(template[end:param.start()]))
        out.append(f"(?P<{param.group(1)}>{'.*' if param.group(2) else '[^/:]+'})")
        end = param.end()
    out.append(re.escape(template[end:]))
    return re.compile("".join(out))


def _key(template: str) -> str | None:
    """The index key of a template: its text from the last ``:`` of its last segment, else that segment when it is
    literal; None when a path of any last segment may match it."""
    if ":path}" in template:
        return None
    last = template[template.rfind("/") + 1:]
    colon = last.rfind(":")
    if colon >= 0:
        return last[colon:]
    return None if "{" in last else last


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        templates: dict[str, _Template] = {}
        for route in routes:
            _, handlers = templates.setdefault(route.template, (_compile(route.template), {}))
            if route.method in handlers:
                raise MalformedData(f"{route.method} {route.template} is in the table twice")
            handler = route.handler
            if route.api is not None and not isinstance(handler, CredentialVerb):
                # The credential verbs check their API once the target is authorized (Credentials.authorize_chain).
                handler = _ApiEndpoint(handler, route.api)
            handlers[route.method] = handler
        keyed: dict[str, list[_Template]] = {}
        any_segment: list[_Template] = []  # a parameter last: any path whose last segment has no ':'
        any_path: list[_Template] = []  # a {name:path} parameter: any path at all
        for template, entry in templates.items():
            key = _key(template)
            if key is not None:
                keyed.setdefault(key, []).append(entry)
            elif ":path}" in template:
                any_path.append(entry)
            else:
                any_segment.append(entry)
        # A literal last segment may also be a parameter's value (an account named "keys").
        self._keyed = {key: (*entries, *([] if key.startswith(":") else any_segment), *any_path)
                       for key, entries in keyed.items()}
        self._any_segment = (*any_segment, *any_path)
        self._any_path = tuple(any_path)

    def match(self, method: str, path: str) -> Match:
        colon = path.rfind(":")
        # A verb's entries first (no template's key after a ':' holds a '/', so a hit is the last segment's verb).
        candidates = self._keyed.get(path[colon:]) if colon >= 0 else None
        if candidates is None:
            last = path[path.rfind("/") + 1:]
            candidates = self._keyed.get(last, self._any_path if ":" in last else self._any_segment)
        allow: tuple[str, ...] = ()
        for pattern, handlers in candidates:
            found = pattern.fullmatch(path)
            if found is None:
                continue
            handler = handlers.get(method)
            if handler is not None:
                return handler, found, ()
            allow += tuple(m for m in handlers if m not in allow)
        return (None, None, allow) if allow else NOT_FOUND
