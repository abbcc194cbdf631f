"""schemathesis against a real server's ``/openapi.json``: no 5xx, every 4xx in its surface's error shape, every
answer matching the document (content type and body schema), and no traceback in the server log.

Every documented operation is driven with positive and negative examples, both with random path parameters
and with the names of resources that exist (so handlers run past the lookup). The server is this module's own
(``--allow-time-travel``): the operations delete accounts, rewrite policies and move the clock, which would
disturb the session server other tests share. Destructive operations run last, the clock last of all.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from keyless.http.app import routes
from keyless.http.openapi import build_openapi
from tests.conftest import Server, start_server
from tests.security.support import LogWatch, describe, error_shape_problem

EXAMPLES = 10  # per strategy; up to four strategies per operation
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DOC = build_openapi("http://placeholder")


def _priority(path: str, method: str) -> int:
    """Reads first, then creations and credentials, then changes, deletions, project policies, the clock."""
    if path.endswith("clock:advance"):
        return 6
    if re.fullmatch(r"/v[13]/projects/\{project\}:setIamPolicy", path):
        return 5
    if method == "delete":
        return 4
    if method in ("put", "patch") or path.endswith((":setIamPolicy", ":disable", ":enable", ":undelete",
                                                      ":resetSecret")):
        return 3
    if method == "post":
        return 2
    return 1


OPERATIONS = sorted(((path, method) for path, item in DOC["paths"].items() for method in item),
                    # Among deletions, keys before their account.
                    key=lambda pm: (_priority(*pm), -pm[0].count("/") if pm[1] == "delete" else 0, pm[0], pm[1]))


@dataclass
class Target:
    server: Server
    schema: Any
    log: LogWatch
    real: dict[str, list[str]] = field(default_factory=dict)
    token: str = ""

    def refresh_owner(self) -> None:
        self.token = self.server.user_token(self.server.owner_file)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    srv = start_server(tmp_path_factory.mktemp("schemathesis") / "data", "--allow-time-travel")
    try:
        email = srv.create_sa("fuzz-target")
        srv.grant(email, "user:owner@keyless.local", TOKEN_CREATOR)
        unique_id = srv.owner("GET", f"/v1/projects/-/serviceAccounts/{email}")["uniqueId"]
        key = srv.owner("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", {})["name"].rsplit("/", 1)[1]
        srv.owner("POST", "/keyless/v1/projects", {"projectId": "fuzz-victim"})
        srv.owner("PUT", "/keyless/v1/groups/fuzz-group@example.com", {"members": ["user:owner@keyless.local"]})
        srv.owner("POST", "/keyless/v1/users", {"email": "fuzz-user@example.com"})
        constraint = "iam.allowServiceAccountCredentialLifetimeExtension"
        srv.owner("PATCH", f"/v2/projects/fuzz-victim/policies/{constraint}",
                  {"spec": {"rules": [{"values": {"allowedValues": [email]}}]}})
        operation = srv.owner("POST", "/v1/projects/fuzz-victim/services/iam.googleapis.com:enable", {})["name"]
        id_token = srv.owner("POST", f"/v1/projects/-/serviceAccounts/{email}:generateIdToken",
                             {"audience": "https://fuzz", "organizationNumberIncluded": True})["token"]
        claims = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))
        pools = "/v1/projects/fuzz-victim/locations/global/workloadIdentityPools"
        srv.owner("POST", f"{pools}?workloadIdentityPoolId=fuzz-pool", {})
        srv.owner("POST", f"{pools}/fuzz-pool/providers?workloadIdentityPoolProviderId=fuzz-provider", {
            "attributeMapping": {"google.subject": "assertion.sub"},
            "oidc": {"issuerUri": "https://issuer.example", "jwksJson": json.dumps({"keys": [_fuzz_jwk()]})}})
        schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
        tgt = Target(srv, schema, LogWatch(srv.data_dir / "server.log"), real={
            "account": [email, unique_id], "key": [key], "email": [email], "group": ["fuzz-group@example.com"],
            "constraint": [constraint], "user": ["fuzz-user@example.com"], "service": ["iam.googleapis.com"],
            "operation": [operation.removeprefix("operations/")], "pool": ["fuzz-pool"],
            "provider": ["fuzz-provider"], "asset": ["app.js"],
            "organization": [str(claims["google"]["organization_number"])]})
        tgt.refresh_owner()
        yield tgt
    finally:
        srv.stop()


def _fuzz_jwk() -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    return {"kty": "RSA", "n": base64.urlsafe_b64encode(numbers.n.to_bytes(256, "big")).rstrip(b"=").decode(),
            "e": "AQAB"}


def _real_path_parameters(target: Target, path: str) -> list[dict[str, str]]:
    names = re.findall(r"\{(\w+)\}", path)
    if not names:
        return []
    choices: dict[str, list[str]] = dict(target.real)
    if path.startswith("/v1/projects/{project}/serviceAccounts/"):
        choices["project"] = ["-", "keyless-dev"]
    elif path.startswith("/v1/projects/{project}/serviceAccounts"):
        choices["project"] = ["keyless-dev"]
    else:  # project policies and org policies: a project of their own, so the owner keeps keyless-dev
        choices["project"] = ["fuzz-victim"]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(choices[n] for n in names))]


def _strategies(target: Target, path: str, method: str) -> list[tuple[str, Any]]:
    operation = target.schema[path][method.upper()]
    out = [(f"{mode.value}", operation.as_strategy(mode))
           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    real = _real_path_parameters(target, path)
    if real:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            out.append((f"{mode.value}, real resources",
                        st.one_of([operation.as_strategy(mode, path_parameters=p) for p in real])))
    return out


def test_undocumented_methods_are_refused_in_shape(target: Target) -> None:
    """Every method a path does not document is refused (405, or 404 for a missing resource) in shape."""
    target.refresh_owner()
    failures = []
    for path, item in DOC["paths"].items():
        real = _real_path_parameters(target, path)
        concrete = path.format(**real[0]) if real else path
        for method in METHODS:
            if method.lower() in item:
                continue
            r = requests.request(method, f"{target.server.url}{concrete}", json={}, timeout=30,
                                 headers={"Authorization": f"Bearer {target.token}"})
            problem = error_shape_problem(path, r.status_code, r.headers.get("content-type", ""), r.text)
            if problem or r.status_code not in (404, 405):
                failures.append(f"{method} {concrete} -> {r.status_code} {problem or ''}: {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert target.log.alarms() is None


def test_openapi_documents_every_route(target: Target) -> None:
    served = requests.get(f"{target.server.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    doc = served.json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": target.server.url}]
    assert doc["paths"] == DOC["paths"]
    # The route table's operations, exactly (tests/http/test_routing.py holds the table to the document).
    assert {(r.method.lower(), r.template) for r in routes()} == {(m, p) for p, item in doc["paths"].items()
                                                                 for m in item}
    # Every JSON body the handlers read is described; the form of /token names its grant types.
    token_form = doc["components"]["schemas"]["TokenForm"]["properties"]
    assert set(token_form["grant_type"]["enum"]) == {"urn:ietf:params:oauth:grant-type:jwt-bearer", "refresh_token",
                                                     "authorization_code"}
    for name in ("CreateServiceAccountRequest", "PatchServiceAccountRequest", "SetIamPolicyRequest",
                 "GetIamPolicyRequest", "TestIamPermissionsRequest", "GenerateAccessTokenRequest",
                 "GenerateIdTokenRequest", "SignBlobRequest", "SignJwtRequest", "CreateKeyRequest",
                 "UploadKeyRequest", "OrgPolicy", "CreateUserRequest", "SetGroupRequest", "GoogleError"):
        assert name in doc["components"]["schemas"], name


def test_operation_ids_are_unique() -> None:
    # Client generators and schemathesis key on operation ids: they must be unique.
    ids = [op["operationId"] for item in DOC["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_operation_answers_in_shape(target: Target, path: str, method: str) -> None:
    failures: list[str] = []
    sent = 0
    clock = path.endswith("clock:advance")

    for label, strategy in _strategies(target, path, method):
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            nonlocal sent
            try:
                response = case.call(headers={"Authorization": f"Bearer {target.token}"}, timeout=30)
            except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
                return  # refused by the client library before anything was sent
            except requests.exceptions.RequestException as exc:
                failures.append(f"[{label}] {case.method} {case.formatted_path}: transport error {exc!r}")
                return
            sent += 1
            content_type = ";".join(response.headers.get("content-type", []))
            text = response.content.decode("utf-8", "replace")
            problem = error_shape_problem(path, response.status_code, content_type, text)
            if problem:
                req = response.request
                failures.append(f"[{label}] {problem}: "
                                + describe(req.method or "", req.url or "", req.headers, req.body,
                                           response.status_code, text))
            if response.status_code < 500:
                try:
                    case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
                except (AssertionError, FailureGroup) as exc:
                    req = response.request
                    failures.append(f"[{label}] response does not match /openapi.json: {str(exc)[:600]}\n    "
                                    + describe(req.method or "", req.url or "", req.headers, req.body,
                                               response.status_code, text))
            if clock:  # the owner's token may just have expired: mint another, which must still work
                try:
                    target.refresh_owner()
                except AssertionError as exc:
                    req = response.request
                    failures.append(f"[{label}] after this request the owner's refresh-token grant fails "
                                    f"({str(exc).splitlines()[0][:200]}): "
                                    + describe(req.method or "", req.url or "", req.headers, req.body,
                                               response.status_code, text))

        try:
            run()
        except Unsatisfiable:
            if label.startswith("positive"):
                raise
            # Nothing to make invalid (no parameters, no body): the negative phase has no example.
    alarms = target.log.alarms()
    assert not failures and alarms is None, (
        f"{len(failures)} bad answers of {sent} requests:\n" + "\n".join(failures[:15])
        + (f"\nserver log:\n{alarms}" if alarms else ""))

