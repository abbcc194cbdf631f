"""The API port's one route table: 404 for a path no template matches, 405 with ``Allow`` (every method the
path's templates take) for a method none takes, parameters that stop at a ``:verb``, and the table and
``/openapi.json`` describing the same operations."""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from keyless.http.app import routes
from keyless.http.openapi import build_openapi
from keyless.http.routing import API_SCOPE_KEY, CredentialVerb, Route, Router
from keyless.metadata.app import build_metadata_app
from tests.http.helpers import PROJECT, Api, assert_google_error, assert_oauth_error

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SA = f"/v1/projects/{PROJECT}/serviceAccounts"
ACCOUNT = "/v1/projects/-/serviceAccounts/robot-one@keyless-dev.iam.gserviceaccount.com"
KEY = f"{ACCOUNT}/keys/0123456789abcdef"


def allowed(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", SA, {"GET", "POST"}),
    ("POST", ACCOUNT, {"GET", "PATCH", "PUT", "DELETE"}),
    ("GET", f"{ACCOUNT}:getIamPolicy", {"POST"}),
    ("DELETE", f"{ACCOUNT}:undelete", {"POST"}),
    ("GET", f"{ACCOUNT}:generateAccessToken", {"POST"}),
    ("PUT", f"{ACCOUNT}:signJwt", {"POST"}),
    ("POST", f"{ACCOUNT}/allowedLocations", {"GET"}),
    ("DELETE", f"{ACCOUNT}/keys", {"GET", "POST"}),
    ("GET", f"{ACCOUNT}/keys:upload", {"POST"}),
    ("PATCH", KEY, {"GET", "DELETE"}),
    ("GET", f"{KEY}:disable", {"POST"}),
    ("POST", f"/v1/projects/{PROJECT}", {"GET"}),
    ("GET", f"/v3/projects/{PROJECT}:setIamPolicy", {"POST"}),
    ("GET", f"/v1/projects/{PROJECT}:getOrgPolicy", {"POST"}),
    ("POST", f"/v2/projects/{PROJECT}/policies/iam.disableServiceAccountKeyCreation",
     {"GET", "PATCH", "PUT", "DELETE"}),
    ("POST", "/v2/organizations/1/policies/c:getEffectivePolicy", {"GET"}),
    ("PUT", f"/v1/projects/{PROJECT}/services", {"GET"}),
    ("GET", f"/v1/projects/{PROJECT}/services/iam.googleapis.com:enable", {"POST"}),
    ("PATCH", "/keyless/v1/users", {"GET", "POST"}),
    ("PUT", "/keyless/v1/users/erin@example.com", {"GET", "DELETE"}),
    ("GET", "/keyless/v1/users/erin@example.com:setPassword", {"POST"}),
    ("POST", "/keyless/v1/groups/team@example.com", {"GET", "PUT", "DELETE"}),
    ("POST", "/keyless/v1/metadata", {"GET", "PUT", "DELETE"}),
    ("GET", "/keyless/v1/debug/clock:advance", {"POST"}),
    ("DELETE", "/v1/auditLog", {"GET"}),
    ("POST", "/oauth2/v3/certs", {"GET"}),
    ("PUT", "/o/oauth2/v2/auth", {"GET", "POST"}),
    ("POST", "/healthz", {"GET"}),
])
def test_a_method_the_path_does_not_take_is_a_405_naming_the_ones_it_takes(
        api: Api, method: str, path: str, allow: set[str]) -> None:
    r = api.call(method, path, {} if method in ("POST", "PUT", "PATCH") else None)
    error = assert_google_error(r, 405, "UNIMPLEMENTED")
    assert allowed(r) == allow
    assert method in error["message"] and path in error["message"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/token", {"POST"}),
    ("PUT", "/oauth2/v4/token", {"POST"}),
    ("DELETE", "/tokeninfo", {"GET", "POST"}),
    ("PATCH", "/o/oauth2/revoke", {"GET", "POST"}),
])
def test_the_oauth_endpoints_refuse_a_method_in_the_oauth_shape(
        api: Api, method: str, path: str, allow: set[str]) -> None:
    r = api.client.request(method, path)
    assert_oauth_error(r, 405, "invalid_request")
    assert allowed(r) == allow


@pytest.mark.parametrize("path", [
    f"{ACCOUNT}:fly",
    f"{ACCOUNT}:generateaccesstoken",
    f"{KEY}:fly",
    f"{ACCOUNT}/keys:fly",
    f"/v1/projects/{PROJECT}:fly",
    f"/v3/projects/{PROJECT}:getOrgPolicy",  # Resource Manager v1's verb only
    f"/v1/projects/{PROJECT}/services/iam.googleapis.com:fly",
    "/keyless/v1/users/erin@example.com:fly",
    "/v1/organizations/1",
    "/v1/organizations/1:fly",
])
def test_an_unknown_verb_or_path_is_a_404(api: Api, path: str) -> None:
    assert_google_error(api.call("POST", path, {}), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", path), 404, "NOT_FOUND")


@pytest.mark.parametrize("path", [
    "/v1/projects/-/serviceAccounts/a:b:generateAccessToken",
    "/v1/projects/-/serviceAccounts/a:b",
    "/v1/projects/a:b/serviceAccounts",
    f"{ACCOUNT}/keys/a:b:disable",
])
def test_a_parameter_stops_at_a_colon(api: Api, path: str) -> None:
    """An account, a project or a key id holds no ':', so the ':' of a path is always its verb's."""
    for method in ("GET", "POST"):
        assert_google_error(api.call(method, path, {} if method == "POST" else None), 404, "NOT_FOUND")


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "CONNECT"])
@pytest.mark.parametrize(("path", "allow"), [
    (SA, {"GET", "POST"}),
    (f"{ACCOUNT}:generateAccessToken", {"POST"}),
    ("/token", {"POST"}),
    ("/tokeninfo", {"GET", "POST"}),
    ("/healthz", {"GET"}),
    ("/keyless/v1/users", {"GET", "POST"}),
])
def test_head_and_options_are_refused_not_failed(api: Api, method: str, path: str, allow: set[str]) -> None:
    r = api.client.request(method, path)
    assert r.status_code == 405, r.text
    assert allowed(r) == allow
    if method != "HEAD":  # a HEAD answer has no body
        assert r.json()["error"]


def test_the_table_and_openapi_describe_the_same_operations() -> None:
    table = {(route.method.lower(), route.template) for route in routes()}
    documented = {(method, path) for path, item in build_openapi()["paths"].items() for method in item}
    assert table - documented == set(), "in the route table, not in /openapi.json"
    assert documented - table == set(), "in /openapi.json, not in the route table"


# The path patterns that named each route's API before the table carried it (http/common.py's _ROUTE_SERVICES):
# the table must give every route the API these gave its template (with a sample value in each parameter).
_OLD_PATTERNS = (
    (re.compile(r"/v1/projects/([^/:]+)/serviceAccounts(?:/.*)?"), "iam.googleapis.com"),
    (re.compile(r"/v[13]/projects/([^/:]+)(?::\w+)?"), "cloudresourcemanager.googleapis.com"),
    (re.compile(r"/v1/organizations/()[^/]+"), "cloudresourcemanager.googleapis.com"),
    (re.compile(r"/v2/projects/([^/]+)/(?:policies|constraints)(?:/.*)?"), "orgpolicy.googleapis.com"),
    (re.compile(r"/v2/organizations/()[^/]+/(?:policies|constraints)(?:/.*)?"), "orgpolicy.googleapis.com"),
)


def test_each_route_carries_the_api_its_path_belonged_to() -> None:
    for route in routes():
        path = re.sub(r"\{\w+(:path)?\}", "x", route.template)
        expected = next((api for pattern, api in _OLD_PATTERNS if pattern.fullmatch(path)), None)
        assert route.api == expected, (route.method, route.template)


def test_a_handler_reads_its_routes_api_from_the_request() -> None:
    seen: list[object] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.scope.get(API_SCOPE_KEY))
        return Response("")

    router = Router([Route("GET", "/things/{thing}", endpoint, "things.googleapis.com")])
    handler = router.match("GET", "/things/one")[0]
    assert handler is not None and not isinstance(handler, CredentialVerb)
    scope = {"type": "http", "method": "GET", "path": "/things/one", "headers": [], "query_string": b""}
    asyncio.run(handler(Request(scope)))
    assert seen == ["things.googleapis.com"]


async def _a(request: Request) -> Response:
    return Response("a")


async def _b(request: Request) -> Response:
    return Response("b")


def test_the_allow_header_combines_every_template_the_path_matches() -> None:
    router = Router([Route("GET", "/things/{thing}", _a), Route("DELETE", "/things/{thing}", _a),
                     Route("POST", "/things/{rest:path}", _b), Route("POST", "/things/{thing}:fly", _b)])
    handler, found, _ = router.match("GET", "/things/one")
    assert handler is _a and found is not None and found["thing"] == "one"
    assert router.match("POST", "/things/one")[0] is _b
    assert router.match("PUT", "/things/one") == (None, None, ("GET", "DELETE", "POST"))
    assert router.match("GET", "/things/one:fly") == (None, None, ("POST",))
    assert router.match("GET", "/things/one:walk") == (None, None, ("POST",))  # only {rest:path} takes a ':'
    assert router.match("GET", "/nothing") == (None, None, ())


def test_a_route_is_in_the_table_once() -> None:
    with pytest.raises(ValueError, match="twice"):
        Router([Route("GET", "/a/{b}", _a), Route("GET", "/a/{b}", _b)])


# ---------------------------------------------------------------- the metadata server


@pytest.fixture
def metadata(inproc: Any) -> Iterator[TestClient]:
    with TestClient(build_metadata_app(inproc.keyless), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_the_metadata_server_refuses_other_methods_in_its_own_shape(metadata: TestClient, method: str) -> None:
    r = metadata.request(method, "/computeMetadata/v1/project/project-id", headers={"Metadata-Flavor": "Google"})
    assert r.status_code == 405
    assert allowed(r) == {"GET", "HEAD", "POST"}
    assert r.headers["Metadata-Flavor"] == "Google" and r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_the_metadata_server_answers_get_head_and_post(metadata: TestClient, method: str) -> None:
    r = metadata.request(method, "/computeMetadata/v1/project/project-id/", headers={"Metadata-Flavor": "Google"})
    assert r.status_code == 200 and r.headers["Metadata-Flavor"] == "Google"
    assert r.text == ("" if method == "HEAD" else "keyless-dev")


def test_a_head_request_changes_nothing(api: Api) -> None:
    """Starlette ran the GET handler for a HEAD: ``HEAD /revoke?token=`` revoked the token."""
    token = api.owner_token
    r = api.client.head("/revoke", params={"token": token})
    assert r.status_code == 405 and allowed(r) == {"GET", "POST"}
    assert api.call("GET", SA, token=token).status_code == 200
