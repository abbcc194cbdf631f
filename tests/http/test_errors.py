"""Every failure is Google-shaped: bad JSON, wrong types, unknown fields, missing or bad credentials, OAuth errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.helpers import CLOUD, PROJECT, Api, assert_google_error, assert_oauth_error

SA_COLLECTION = f"/v1/projects/{PROJECT}/serviceAccounts"


def _sa_path(sa: dict[str, Any], verb: str = "") -> str:
    return f"/v1/projects/-/serviceAccounts/{sa['email']}{verb}"


# ---------------------------------------------------------------- routing


def test_unknown_path_is_a_google_404(api: Api) -> None:
    assert_google_error(api.call("GET", "/v1/nothing/here"), 404, "NOT_FOUND")
    assert_google_error(api.call("GET", "/nope", auth=False), 404, "NOT_FOUND")


def test_unknown_verb_is_a_google_404(api: Api, sa: dict[str, Any]) -> None:
    assert_google_error(api.call("POST", _sa_path(sa, ":fly"), {}), 404, "NOT_FOUND")
    assert_google_error(api.call("POST", f"/v1/projects/{PROJECT}:fly", {}), 404, "NOT_FOUND")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", f"/v1/projects/{PROJECT}:getIamPolicy"),
    ("GET", f"/v1/projects/{PROJECT}:setIamPolicy"),
    ("GET", f"/v3/projects/{PROJECT}:testIamPermissions"),
    ("PUT", SA_COLLECTION),
    ("DELETE", f"/v1/projects/{PROJECT}"),
])
def test_wrong_method_is_google_shaped(api: Api, method: str, path: str) -> None:
    assert_google_error(api.call(method, path), 405, "UNIMPLEMENTED")


def test_post_to_certs_is_refused(api: Api) -> None:
    assert_google_error(api.call("POST", "/oauth2/v3/certs", {}), 405, "UNIMPLEMENTED")


# ---------------------------------------------------------------- authentication


AUTHENTICATED_REQUESTS = [
    ("GET", SA_COLLECTION, None),
    ("POST", SA_COLLECTION, {"accountId": "nobody-here"}),
    ("POST", f"/v1/projects/{PROJECT}:getIamPolicy", {}),
    ("POST", f"/v3/projects/{PROJECT}:getIamPolicy", {}),
    ("POST", f"/v1/projects/{PROJECT}:testIamPermissions", {"permissions": ["iam.serviceAccounts.get"]}),
    ("POST", "/v1/projects/-/serviceAccounts/robot-one@keyless-dev.iam.gserviceaccount.com:generateAccessToken",
     {"scope": [CLOUD]}),
    ("POST", "/v1/projects/-/serviceAccounts/robot-one@keyless-dev.iam.gserviceaccount.com:signBlob",
     {"payload": "aGk="}),
    ("GET", f"/v1/projects/{PROJECT}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED_REQUESTS)
def test_missing_bearer_is_401(api: Api, sa: dict[str, Any], method: str, path: str, body: Any) -> None:
    r = api.call(method, path, body, auth=False)
    assert_google_error(r, 401, "UNAUTHENTICATED")
    # RFC 6750: the 401 names the scheme it wants, on the fast credential path and the routed one alike.
    assert r.headers["www-authenticate"] == 'Bearer realm="https://accounts.google.com/"'


def test_a_client_authentication_failure_names_its_scheme(api: Api) -> None:
    r = api.refresh_token_grant(client_secret="wrong")
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("authorization", [
    "Bearer", "Bearer ", "Bearer garbage", "Bearer ya29.not-a-real-token", "Basic dXNlcjpwYXNz", "token abc",
    "Bearer a.b.c", "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.", "bearer", "Bearer ya29.",
])
@pytest.mark.parametrize(("method", "path", "body"), AUTHENTICATED_REQUESTS[:2] + AUTHENTICATED_REQUESTS[5:6])
def test_invalid_bearer_is_401(api: Api, sa: dict[str, Any], authorization: str, method: str, path: str,
                               body: Any) -> None:
    r = api.call(method, path, body, headers={"Authorization": authorization})
    assert_google_error(r, 401, "UNAUTHENTICATED")


def test_tampered_token_is_401(api: Api) -> None:
    token = api.owner_token
    head, _, mac = token.rpartition(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert_google_error(api.call("GET", SA_COLLECTION, token=f"{head}.{flipped}"), 401, "UNAUTHENTICATED")
    payload = head.split(".", 1)[1]
    forged_payload = payload[:-3] + ("x" if payload[-3] != "x" else "y") + payload[-2:]
    assert_google_error(api.call("GET", SA_COLLECTION, token=f"ya29.{forged_payload}.{mac}"), 401,
                        "UNAUTHENTICATED")
    assert api.call("GET", SA_COLLECTION, token=token).status_code == 200


def test_revoked_token_is_401(api: Api) -> None:
    token = api.refresh_token_grant().json()["access_token"]
    assert api.call("GET", SA_COLLECTION, token=token).status_code == 200
    assert api.client.post("/revoke", data={"token": token}).status_code == 200
    assert_google_error(api.call("GET", SA_COLLECTION, token=token), 401, "UNAUTHENTICATED")


def test_token_without_api_scope_is_403(api: Api) -> None:
    r = api.refresh_token_grant(scope="openid https://www.googleapis.com/auth/userinfo.email")
    assert r.status_code == 200
    token = r.json()["access_token"]
    assert_google_error(api.call("GET", SA_COLLECTION, token=token), 403, "PERMISSION_DENIED")


# ---------------------------------------------------------------- malformed bodies


def _json_endpoints(sa: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("POST", SA_COLLECTION),
        ("PATCH", _sa_path(sa)),
        ("POST", _sa_path(sa, ":generateAccessToken")),
        ("POST", _sa_path(sa, ":generateIdToken")),
        ("POST", _sa_path(sa, ":signBlob")),
        ("POST", _sa_path(sa, ":signJwt")),
        ("POST", _sa_path(sa, ":setIamPolicy")),
        ("POST", _sa_path(sa, ":getIamPolicy")),
        ("POST", _sa_path(sa, "/keys")),
        ("POST", f"/v1/projects/{PROJECT}:setIamPolicy"),
        ("POST", f"/v3/projects/{PROJECT}:setIamPolicy"),
        ("POST", f"/v1/projects/{PROJECT}:testIamPermissions"),
        ("POST", f"/v3/projects/{PROJECT}:getIamPolicy"),
    ]


@pytest.mark.parametrize("raw", [
    b"{", b"{'accountId': 'x'}", b'{"a": }', b"not json", b'{"a": 1,}', b"\xff\xfe\x00", b'{"a": NaN}',
    b"[" * 5000 + b"]" * 5000, b'{"a": "\\ud800"}', b'{"a" 1}',
])
def test_malformed_json_is_400(api: Api, sa: dict[str, Any], raw: bytes) -> None:
    for method, path in _json_endpoints(sa):
        r = api.call(method, path, raw=raw)
        assert_google_error(r, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("raw", [b"[]", b'"string"', b"42", b"null", b"true", b'[{"accountId": "x"}]'])
def test_non_object_json_is_400(api: Api, sa: dict[str, Any], raw: bytes) -> None:
    for method, path in _json_endpoints(sa):
        assert_google_error(api.call(method, path, raw=raw), 400, "INVALID_ARGUMENT")


def test_oversized_body_is_refused(api: Api, sa: dict[str, Any]) -> None:
    payload = "A" * (2 * 1024 * 1024)
    r = api.call("POST", _sa_path(sa, ":signBlob"), {"payload": payload})
    assert_google_error(r, 413, "INVALID_ARGUMENT")


@pytest.mark.parametrize(("method", "suffix", "body", "field"), [
    ("POST", "collection", {"accountId": "unknown-field", "displayName": "x"}, "displayName"),
    ("POST", "collection", {"accountId": "unknown-field", "account_id": "x"}, "account_id"),
    ("PATCH", "", {"serviceAccount": {"displayName": "x"}, "updateMask": "displayName", "etag": "x"}, "etag"),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "scopes": [CLOUD]}, "scopes"),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "lifetime": "60s", "expireTime": "x"}, "expireTime"),
    ("POST", ":generateIdToken", {"audience": "https://x", "include_email": True}, "include_email"),
    ("POST", ":signBlob", {"payload": "aGk=", "keyId": "x"}, "keyId"),
    ("POST", ":signJwt", {"payload": "{}", "jwt": "x"}, "jwt"),
    ("POST", ":setIamPolicy", {"policy": {}, "policyy": {}}, "policyy"),
    ("POST", ":getIamPolicy", {"requestedPolicyVersion": 3}, "requestedPolicyVersion"),
    ("POST", ":testIamPermissions", {"permission": ["x"]}, "permission"),
    ("POST", "/keys", {"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyType": "x"}, "keyType"),
    ("POST", "project:setIamPolicy", {"policy": {}, "bindings": []}, "bindings"),
    ("POST", "project:getIamPolicy", {"options": {}, "version": 3}, "version"),
    ("POST", "project:testIamPermissions", {"permissions": [], "resource": "x"}, "resource"),
])
def test_unknown_top_level_fields_are_400(api: Api, sa: dict[str, Any], method: str, suffix: str,
                                          body: dict[str, Any], field: str) -> None:
    if suffix == "collection":
        path = SA_COLLECTION
    elif suffix.startswith("project"):
        path = f"/v1/projects/{PROJECT}{suffix[len('project'):]}"
    else:
        path = _sa_path(sa, suffix)
    error = assert_google_error(api.call(method, path, body), 400, "INVALID_ARGUMENT")
    assert field in error["message"]


@pytest.mark.parametrize(("suffix", "body"), [
    ("collection", {"accountId": "nested-typo", "serviceAccount": {"displayNam": "typo"}}),
    (":setIamPolicy", {"policy": {"bindings": [], "etagg": "x"}}),
    (":setIamPolicy", {"policy": {"bindings": [{"role": "roles/viewer", "member": ["user:a@example.com"]}]}}),
    (":getIamPolicy", {"options": {"requestedPolicyVersionn": 3}}),
])
def test_unknown_nested_fields_are_400(api: Api, sa: dict[str, Any], suffix: str, body: dict[str, Any]) -> None:
    """Google's JSON mapping refuses an unknown name at any depth ("Unknown name ... at 'service_account'")."""
    path = SA_COLLECTION if suffix == "collection" else _sa_path(sa, suffix)
    assert_google_error(api.call("POST", path, body), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("POST", "collection", {"accountId": 123456}),
    ("POST", "collection", {"accountId": ["wrong-types"]}),
    ("POST", "collection", {"accountId": "wrong-types", "serviceAccount": "robot"}),
    ("POST", "collection", {"accountId": "wrong-types", "serviceAccount": {"displayName": 5}}),
    ("POST", "collection", {"accountId": "wrong-types", "serviceAccount": {"description": ["x"]}}),
    ("PATCH", "", {"serviceAccount": "x", "updateMask": "displayName"}),
    ("PATCH", "", {"serviceAccount": {"displayName": 1}, "updateMask": "displayName"}),
    ("PATCH", "", {"serviceAccount": {"displayName": "x"}, "updateMask": ["displayName"]}),
    ("POST", ":generateAccessToken", {"scope": 42}),
    ("POST", ":generateAccessToken", {"scope": [42]}),
    ("POST", ":generateAccessToken", {"scope": {"a": CLOUD}}),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "lifetime": 3600}),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "lifetime": {"seconds": 60}}),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "delegates": "projects/-/serviceAccounts/x@y.com"}),
    ("POST", ":generateAccessToken", {"scope": [CLOUD], "delegates": [5]}),
    ("POST", ":generateIdToken", {"audience": 5}),
    ("POST", ":generateIdToken", {"audience": "https://x", "includeEmail": "yes"}),
    ("POST", ":generateIdToken", {"audience": "https://x", "includeEmail": 1}),
    ("POST", ":signBlob", {"payload": 123}),
    ("POST", ":signBlob", {"payload": "not base64 !!"}),
    ("POST", ":signJwt", {"payload": {"sub": "x"}}),
    ("POST", ":signJwt", {"payload": "[1, 2]"}),
    ("POST", ":signJwt", {"payload": "not json"}),
    ("POST", ":signJwt", {"payload": '{"exp": "tomorrow"}'}),
    ("POST", ":setIamPolicy", {"policy": "x"}),
    ("POST", ":setIamPolicy", {"policy": {"bindings": "x"}}),
    ("POST", ":setIamPolicy", {"policy": {"bindings": [{"role": 5, "members": ["user:a@example.com"]}]}}),
    ("POST", ":setIamPolicy", {"policy": {"bindings": [{"role": "roles/viewer", "members": "user:a@example.com"}]}}),
    ("POST", ":setIamPolicy", {"policy": {"bindings": [{"role": "roles/viewer", "members": [5]}]}}),
    ("POST", ":setIamPolicy", {"policy": {"version": "three"}}),
    ("POST", ":setIamPolicy", {"policy": {"etag": 5}}),
    ("POST", ":setIamPolicy", {"policy": {}, "updateMask": 5}),
    ("POST", ":setIamPolicy", {}),
    ("POST", ":getIamPolicy", {"options": {"requestedPolicyVersion": "x"}}),
    ("POST", ":testIamPermissions", {"permissions": "iam.serviceAccounts.get"}),
    ("POST", ":testIamPermissions", {"permissions": [5]}),
    ("POST", "/keys", {"privateKeyType": 5}),
    ("POST", "/keys", {"keyAlgorithm": "KEY_ALG_RSA_1024"}),
])
def test_wrong_types_are_400(api: Api, sa: dict[str, Any], method: str, suffix: str, body: dict[str, Any]) -> None:
    path = SA_COLLECTION if suffix == "collection" else _sa_path(sa, suffix)
    assert_google_error(api.call(method, path, body), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("params", [
    {"pageSize": "abc"}, {"pageSize": "-1"}, {"pageSize": "1.5"}, {"pageToken": "%%%"}, {"pageToken": "@@"},
])
def test_bad_list_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    assert_google_error(api.call("GET", SA_COLLECTION, params=params), 400, "INVALID_ARGUMENT")


# ---------------------------------------------------------------- the OAuth token endpoint


def test_token_endpoint_success_shape(api: Api) -> None:
    r = api.refresh_token_grant()
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert CLOUD in body["scope"].split()
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("form", "code", "error"), [
    ({}, 400, "invalid_request"),
    ({"grant_type": ""}, 400, "invalid_request"),
    ({"grant_type": "password", "username": "a", "password": "b"}, 400, "unsupported_grant_type"),
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ({"grant_type": "refresh_token"}, 400, "invalid_request"),
    ({"grant_type": "refresh_token", "refresh_token": "nope", "client_id": "a", "client_secret": "b"},
     400, "invalid_grant"),
    ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}, 400, "invalid_request"),
    ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "garbage"}, 400, "invalid_grant"),
    ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b.c"}, 400, "invalid_grant"),
])
def test_token_endpoint_errors_are_oauth_shaped(api: Api, form: dict[str, str], code: int, error: str) -> None:
    body = assert_oauth_error(api.client.post("/token", data=form), code, error)
    assert "code" not in body and "status" not in body


def test_token_endpoint_wrong_client_secret(api: Api) -> None:
    creds = dict(api.inproc.owner)
    creds["client_secret"] = "wrong-" + creds["client_secret"]
    assert_oauth_error(api.refresh_token_grant(creds), 401, "invalid_client")
    creds = dict(api.inproc.owner)
    creds["client_id"] = "someone-else.apps.keyless.local"
    assert_oauth_error(api.refresh_token_grant(creds), 401, "invalid_client")


def test_token_endpoint_missing_client(api: Api) -> None:
    r = api.client.post("/token", data={"grant_type": "refresh_token",
                                        "refresh_token": api.inproc.owner["refresh_token"]})
    assert_oauth_error(r, 401, "invalid_client")


def test_token_endpoint_refuses_get(api: Api) -> None:
    assert_oauth_error(api.client.get("/token"), 405, "invalid_request")


def test_token_endpoint_bad_bodies(api: Api) -> None:
    r = api.client.post("/token", content=b"\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(r, 400, "invalid_request")
    r = api.client.post("/token", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_oauth_error(r, 400, "invalid_request")
    r = api.client.post("/token", content=b"[1]", headers={"Content-Type": "application/json"})
    assert_oauth_error(r, 400, "invalid_request")


def test_token_endpoint_accepts_json_bodies(api: Api) -> None:
    owner = api.inproc.owner
    r = api.client.post("/token", json={"grant_type": "refresh_token", "client_id": owner["client_id"],
                                        "client_secret": owner["client_secret"],
                                        "refresh_token": owner["refresh_token"]})
    assert r.status_code == 200
    assert r.json()["access_token"]


def test_tokeninfo_of_garbage_is_oauth_shaped(api: Api) -> None:
    assert_oauth_error(api.client.get("/tokeninfo", params={"access_token": "garbage"}), 400, "invalid_token")
    assert_oauth_error(api.client.get("/tokeninfo"), 400, "invalid_request")


@pytest.mark.parametrize("route", ["credentials", "token", "metadata", "routed"])
def test_an_unexpected_exception_is_a_google_shaped_500_without_its_text(
        api: Api, inproc: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, route: str) -> None:
    """Direct routes (credentials, /token, metadata) and routed ones answer alike: a generic 500, the log names
    only the exception type (its text could hold a secret)."""
    from starlette.testclient import TestClient

    from keyless.http.app import build_app
    from keyless.metadata.app import build_metadata_app

    kl = inproc.keyless
    secret = "ya29.secret-looking-text"

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(secret)

    email = api.create_sa("boom-target")["email"]
    token = api.owner_token
    if route == "credentials":
        monkeypatch.setattr(kl.credentials, "generate_access_token", boom)
        client, call = TestClient(build_app(kl), raise_server_exceptions=False), (
            "POST", f"/v1/projects/-/serviceAccounts/{email}:generateAccessToken")
    elif route == "token":
        monkeypatch.setattr(kl.oauth, "token", boom)
        client, call = TestClient(build_app(kl), raise_server_exceptions=False), ("POST", "/token")
    elif route == "metadata":
        monkeypatch.setattr(kl.core, "resolve_account", boom)
        monkeypatch.setattr(kl.store, "get_meta", boom)
        client, call = TestClient(build_metadata_app(kl), raise_server_exceptions=False), (
            "GET", "/computeMetadata/v1/instance/service-accounts/default/token")
    else:
        monkeypatch.setattr(kl.accounts, "lookup", boom)
        client, call = TestClient(build_app(kl), raise_server_exceptions=False), (
            "GET", f"/v1/projects/{PROJECT}/serviceAccounts/{email}")
    with client:
        response = client.request(call[0], call[1], json={"scope": [CLOUD]} if call[0] == "POST" else None,
                                  headers={"Authorization": f"Bearer {token}", "Metadata-Flavor": "Google"})
    error = assert_google_error(response, 500, "INTERNAL")
    assert error["message"] == "Internal error encountered."
    assert secret not in response.text
    assert secret not in caplog.text
    assert "RuntimeError" in caplog.text


@pytest.mark.parametrize("route", ["credentials", "direct", "routed", "token", "revoke"])
def test_an_audit_entry_the_database_cannot_take_is_a_503_in_the_route_shape(
        api: Api, sa: dict[str, Any], inproc: Any, monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    """The database fails between a decision and its audit entry (a failover, docs/operations.md): nothing is
    released, and the answer is Unavailable's 503 in Google's shape, or OAuth's on the OAuth endpoints."""
    from starlette.testclient import TestClient

    from keyless.errors import Unavailable
    from keyless.http.app import build_app

    token = api.owner_token
    auth = {"Authorization": f"Bearer {token}"}
    project_policy = api.ok("POST", f"/v1/projects/{PROJECT}:getIamPolicy")
    account_policy = api.ok("POST", _sa_path(sa, ":getIamPolicy"))
    owner = inproc.owner

    async def unavailable(*args: Any, **kwargs: Any) -> None:
        raise Unavailable()

    # No timing can make a real database fail exactly there: the store's audit write fails instead.
    monkeypatch.setattr(inproc.keyless.store, "append_audit", unavailable)
    with TestClient(build_app(inproc.keyless), raise_server_exceptions=False) as client:
        if route == "credentials":
            r = client.post(_sa_path(sa, ":generateAccessToken"), json={"scope": [CLOUD]}, headers=auth)
        elif route == "direct":
            r = client.post(_sa_path(sa, ":setIamPolicy"), json={"policy": account_policy}, headers=auth)
        elif route == "routed":
            r = client.post(f"/v1/projects/{PROJECT}:setIamPolicy", json={"policy": project_policy}, headers=auth)
        elif route == "token":
            r = client.post("/token", data={"grant_type": "refresh_token", "client_id": owner["client_id"],
                                            "client_secret": owner["client_secret"],
                                            "refresh_token": owner["refresh_token"]})
        else:
            r = client.post("/revoke", data={"token": token})
    if route in ("token", "revoke"):
        assert_oauth_error(r, 503, "temporarily_unavailable")
    else:
        assert_google_error(r, 503, "UNAVAILABLE")
    assert "accessToken" not in r.text and "access_token" not in r.text


def test_the_oauth_paths_are_the_oauth_routes() -> None:
    """Where an error escaping the app is given the OAuth shape (keyless.http.edge.escaped_error)."""
    from keyless.http import oauth
    from keyless.http.app import routes

    templates = {r.template for r in routes()}
    # Every OAuth endpoint (the token endpoint's module) answers in OAuth's shape, and so does the STS exchange
    # and its introspection (http/federation.py), which speak OAuth 2.0 (RFC 8693, RFC 7662).
    oauth_routes = {r.template for r in routes() if getattr(r.handler, "__module__", None) == oauth.__name__}
    assert oauth_routes <= oauth.OAUTH_PATHS
    assert oauth.OAUTH_PATHS - oauth_routes == {"/v1/token", "/v1/introspect"}
    assert oauth.OAUTH_PATHS <= templates
