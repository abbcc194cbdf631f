"""Workload identity federation with an OIDC provider, end to end on a real ``keyless serve``.

A stand-in Kubernetes service-account issuer (an OIDC issuer with its own RSA key, as a cluster's API server
has) writes a projected token to a file. The provider knows the issuer only by its JWKS (``jwksJson``). The
workload's unchanged google-auth (``identity_pool.Credentials`` from an ``external_account`` credential file) gets
a federated access token from keyless's STS endpoint, and with ``service_account_impersonation_url`` a service
account's token; an ID token comes through ``impersonated_credentials.IDTokenCredentials``. Bad subject tokens
are refused with OAuth errors, audited, and mint nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from google.auth import identity_pool
from google.auth.transport.requests import Request

from tests.conftest import CLOUD, KEYLESS, Server, start_server
from tests.federation.issuer import ISSUER, Issuer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
PROJECT = "keyless-dev"


@dataclass
class Federation:
    server: Server
    env: dict[str, str]  # what `keyless env` prints (the proxy, its CA)
    issuer: Issuer
    number: str
    pool: str
    provider: str  # full name
    audience: str  # //iam.googleapis.com/<provider>
    account: str  # the service account the workload impersonates
    base: Path

    @property
    def sts(self) -> str:
        return f"{self.server.url}/v1/token"

    def exchange(self, subject_token: str, *, audience: str | None = None, as_json: bool = False,
                 **extra: str) -> requests.Response:
        fields = {"grant_type": TOKEN_EXCHANGE, "subject_token_type": JWT_TYPE, "requested_token_type":
                  ACCESS_TOKEN_TYPE, "audience": audience or self.audience, "scope": CLOUD,
                  "subject_token": subject_token, **extra}
        if as_json:
            camel = {"".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
                     for k, v in fields.items()}
            return requests.post(self.sts, json=camel, timeout=30)
        return requests.post(self.sts, data=fields, timeout=30)

    def credential_file(self, name: str, token_file: Path, *, fmt: str = "text", impersonate: bool = False,
                        token_url: str | None = None, impersonation_base: str | None = None) -> Path:
        info: dict[str, Any] = {
            "type": "external_account", "audience": self.audience, "subject_token_type": JWT_TYPE,
            "token_url": token_url or self.sts,
            "credential_source": {"file": str(token_file), "format": (
                {"type": "text"} if fmt == "text" else {"type": "json", "subject_token_field_name": "token"})},
        }
        if impersonate:
            info["service_account_impersonation_url"] = (
                f"{impersonation_base or self.server.url}/v1/projects/-/serviceAccounts/{self.account}"
                ":generateAccessToken")
        path = self.base / name
        path.write_text(json.dumps(info))
        return path

    def write_token(self, name: str, token: str, fmt: str = "text") -> Path:
        path = self.base / name
        path.write_text(token if fmt == "text" else json.dumps({"token": token}))
        return path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    base = tmp_path_factory.mktemp("federation")
    srv = start_server(base / "data", "--proxy-port", "0")
    try:
        issuer = Issuer()
        number = srv.owner("GET", f"/v1/projects/{PROJECT}")["projectNumber"]
        pools = f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools"
        srv.owner("POST", f"{pools}?workloadIdentityPoolId=cluster", {"displayName": "Cluster"})
        created = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=k8s-oidc", {
            "displayName": "Kubernetes",
            "attributeMapping": {"google.subject": "assertion.sub",
                                 "attribute.namespace": "assertion['kubernetes.io'].namespace",
                                 "google.groups": "['ns-' + assertion['kubernetes.io'].namespace]"},
            "attributeCondition": "attribute.namespace in ['prod', 'staging']",
            "oidc": {"issuerUri": ISSUER, "jwksJson": issuer.jwks()}})
        provider = created["response"]["name"]
        account = srv.create_sa("workload")
        pool = f"projects/{number}/locations/global/workloadIdentityPools/cluster"
        srv.grant(account, f"principalSet://iam.googleapis.com/{pool}/attribute.namespace/prod",
                  "roles/iam.workloadIdentityUser")
        out = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env", "--shell", "dotenv"],
                             capture_output=True, text=True, check=True, timeout=60)
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        yield Federation(srv, env, issuer, number, pool, provider, f"//iam.googleapis.com/{provider}", account,
                         base)
    finally:
        srv.stop()


def _pools(fed: Federation) -> str:
    return f"/v1/projects/{PROJECT}/locations/global/workloadIdentityPools"


def _get_account(fed: Federation, token: str) -> requests.Response:
    return requests.get(f"{fed.server.url}/v1/projects/-/serviceAccounts/{fed.account}", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def _audit(fed: Federation, method: str) -> list[dict[str, Any]]:
    params = {"filter": f'method="{method}"', "pageSize": "1000"}
    r = requests.get(f"{fed.server.url}/v1/auditLog", params=params, timeout=30,
                     headers={"Authorization": f"Bearer {fed.server.owner_token}"})
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


# ---------------------------------------------------------------- pools and providers (IAM v1 REST)


def test_pools_and_providers_are_served_as_google_serves_them(fed: Federation) -> None:
    srv, pools = fed.server, _pools(fed)
    pool = srv.owner("GET", f"{pools}/cluster")
    assert pool == {"name": fed.pool, "displayName": "Cluster", "state": "ACTIVE"}
    op = srv.owner("POST", f"{pools}?workloadIdentityPoolId=ci-runners", {"description": "CI"})
    assert op["done"] is True and op["name"].startswith(f"projects/{fed.number}/locations/global/"
                                                        "workloadIdentityPools/ci-runners/operations/")
    assert op["response"]["state"] == "ACTIVE" and op["response"]["description"] == "CI"
    assert [p["name"].rsplit("/", 1)[1] for p in srv.owner("GET", pools)["workloadIdentityPools"]] == [
        "ci-runners", "cluster"]
    srv.owner("POST", f"{pools}?workloadIdentityPoolId=ci-runners", {}, expect=409)
    for bad in ("gcp-pool", "abc", "UPPER-case", "x" * 33):
        err = srv.owner("POST", f"{pools}?workloadIdentityPoolId={bad}", {}, expect=400)
        assert err["error"]["status"] == "INVALID_ARGUMENT"
    srv.owner("POST", f"{pools}?workloadIdentityPoolId=toolong", {"displayName": "x" * 33}, expect=400)
    patched = srv.owner("PATCH", f"{pools}/ci-runners?updateMask=displayName", {"displayName": "Runners"})
    assert patched["response"]["displayName"] == "Runners"
    deleted = srv.owner("DELETE", f"{pools}/ci-runners")["response"]
    assert deleted["state"] == "DELETED" and "expireTime" in deleted
    assert [p["name"] for p in srv.owner("GET", pools)["workloadIdentityPools"]] == [fed.pool]
    assert len(srv.owner("GET", f"{pools}?showDeleted=true")["workloadIdentityPools"]) == 2
    assert srv.owner("POST", f"{pools}/ci-runners:undelete", {})["response"]["state"] == "ACTIVE"
    provider = srv.owner("GET", f"{pools}/cluster/providers/k8s-oidc")
    assert provider["oidc"]["issuerUri"] == ISSUER and provider["state"] == "ACTIVE"
    assert provider["attributeMapping"]["google.subject"] == "assertion.sub"
    # keyless serves OIDC providers only, and discovers keys (without jwksJson) only from an issuer it may fetch.
    for body, field in (({"aws": {"accountId": "123456789012"}, "attributeMapping": {"google.subject": "x"}},
                         "aws"),
                        ({"oidc": {"issuerUri": "http://issuer.example"},
                          "attributeMapping": {"google.subject": "assertion.sub"}}, "issuerUri"),
                        ({"oidc": {"issuerUri": ISSUER, "jwksJson": fed.issuer.jwks()}}, "google.subject"),
                        ({"oidc": {"issuerUri": ISSUER, "jwksJson": fed.issuer.jwks()},
                          "attributeMapping": {"google.subject": "assertion.sub"},
                          "attributeCondition": "request.time > 1"}, "request")):
        err = srv.owner("POST", f"{pools}/cluster/providers?workloadIdentityPoolProviderId=other", body, expect=400)
        assert field in err["error"]["message"], err


def test_members_of_a_pool_are_checked_in_policies(fed: Federation) -> None:
    path = f"/v1/projects/-/serviceAccounts/{fed.account}"
    policy = fed.server.owner("POST", f"{path}:getIamPolicy")
    for bad in (f"principal://iam.googleapis.com/{fed.pool}/subjects/x",
                f"principalSet://iam.googleapis.com/{fed.pool}/attribute.Bad-Name/x",
                f"principalSet://iam.googleapis.com/{fed.pool}/group/",
                f"principal://iam.googleapis.com/{fed.pool}/subject/{'s' * 128}"):
        body = {"policy": {**policy, "bindings": [*policy.get("bindings", []),
                                                  {"role": "roles/iam.workloadIdentityUser", "members": [bad]}]}}
        err = fed.server.owner("POST", f"{path}:setIamPolicy", body, expect=400)
        assert "Invalid principal identifier" in err["error"]["message"]


# ---------------------------------------------------------------- the exchange, and what its token may do


def test_exchange_gives_a_federated_token_that_acts_through_its_principal_set(fed: Federation) -> None:
    token = fed.issuer.token(fed.audience)
    for as_json in (False, True):
        r = fed.exchange(token, as_json=as_json)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600 and r.headers["cache-control"] == "no-store"
    federated = body["access_token"]
    got = _get_account(fed, federated)
    assert got.status_code == 200 and got.json()["email"] == fed.account
    minted = requests.post(f"{fed.server.url}/v1/projects/-/serviceAccounts/{fed.account}:generateAccessToken",
                           json={"scope": [CLOUD]}, headers={"Authorization": f"Bearer {federated}"}, timeout=30)
    assert minted.status_code == 200, minted.text
    assert _get_account(fed, minted.json()["accessToken"]).status_code == 403  # the account holds no role on itself
    # A subject of another namespace (allowed by the condition) holds no binding on the account.
    staging = fed.exchange(fed.issuer.token(fed.audience, namespace="staging")).json()["access_token"]
    denied = requests.post(f"{fed.server.url}/v1/projects/-/serviceAccounts/{fed.account}:generateAccessToken",
                           json={"scope": [CLOUD]}, headers={"Authorization": f"Bearer {staging}"}, timeout=30)
    assert denied.status_code == 403
    entries = _audit(fed, "google.identity.sts.v1.SecurityTokenService.ExchangeToken")
    member = f"principal://iam.googleapis.com/{fed.pool}/subject/system:serviceaccount:prod:builder"
    granted = [e for e in entries if e["protoPayload"]["authenticationInfo"]["principalEmail"] == member]
    assert granted, entries[-1]


def test_https_audience_and_allowed_audiences(fed: Federation) -> None:
    https = f"https://iam.googleapis.com/{fed.provider}"
    assert fed.exchange(fed.issuer.token(https), audience=https).status_code == 200
    pools = _pools(fed)
    fed.server.owner("PATCH", f"{pools}/cluster/providers/k8s-oidc?updateMask=oidc.allowedAudiences",
                     {"oidc": {"allowedAudiences": ["sts.example"]}})
    try:
        assert fed.exchange(fed.issuer.token("sts.example")).status_code == 200
        assert fed.exchange(fed.issuer.token(fed.audience)).json()["error"] == "invalid_grant"
    finally:
        fed.server.owner("PATCH", f"{pools}/cluster/providers/k8s-oidc?updateMask=oidc.allowedAudiences",
                         {"oidc": {"allowedAudiences": []}})


@pytest.mark.parametrize("case", ["forged", "expired", "wrong_audience", "wrong_issuer", "oversized", "too_long",
                                  "condition_false", "alg_none", "subject_too_long"])
def test_bad_subject_tokens_are_refused_with_oauth_errors(fed: Federation, case: str) -> None:
    issuer = fed.issuer
    token = {
        "forged": lambda: Issuer(kid=issuer.kid).token(fed.audience),
        "expired": lambda: issuer.token(fed.audience, iat=time.time() - 7200),
        "wrong_audience": lambda: issuer.token("//iam.googleapis.com/projects/1/locations/global/"
                                               "workloadIdentityPools/cluster/providers/k8s-oidc"),
        "wrong_issuer": lambda: issuer.token(fed.audience, issuer="https://evil.example"),
        "oversized": lambda: issuer.token(fed.audience, padding="x" * 20_000),
        "too_long": lambda: issuer.token(fed.audience, lifetime=49 * 3600),
        "condition_false": lambda: issuer.token(fed.audience, namespace="dev"),
        "alg_none": lambda: jwt.encode({"iss": ISSUER, "sub": "x", "aud": fed.audience, "iat": int(time.time()),
                                        "exp": int(time.time()) + 60}, None, algorithm="none"),
        "subject_too_long": lambda: issuer.token(fed.audience, subject="s" * 128),
    }[case]()
    before = len(_audit(fed, "google.identity.sts.v1.SecurityTokenService.ExchangeToken"))
    r = fed.exchange(token)
    assert r.status_code in (400, 401), r.text
    body = r.json()
    assert set(body) == {"error", "error_description"}
    expected = {"condition_false": "unauthorized_client", "oversized": "invalid_request",
                "subject_too_long": "invalid_request"}.get(case, "invalid_grant")
    assert body["error"] == expected, body
    if case == "condition_false":
        assert body["error_description"] == "The given credential is rejected by the attribute condition."
    entries = _audit(fed, "google.identity.sts.v1.SecurityTokenService.ExchangeToken")
    assert len(entries) == before + 1 and entries[-1]["severity"] == "ERROR"


def test_malformed_requests_are_oauth_errors(fed: Federation) -> None:
    token = fed.issuer.token(fed.audience)
    assert fed.exchange(token, grant_type="password").json()["error"] == "unsupported_grant_type"
    r = fed.exchange(token, subject_token_type="urn:ietf:params:aws:token-type:aws4_request")
    assert r.json()["error"] == "invalid_request" and "not supported by keyless" in r.json()["error_description"]
    assert fed.exchange(token, audience="//iam.googleapis.com/projects/x").json()["error"] == "invalid_request"
    missing = fed.audience.replace("/providers/k8s-oidc", "/providers/nope-nope")
    assert fed.exchange(token, audience=missing).json()["error"] == "invalid_target"
    assert requests.get(fed.sts, timeout=30).json()["error"] == "invalid_request"


def test_disabling_stops_exchanges_and_deleting_stops_tokens(fed: Federation) -> None:
    srv, pools = fed.server, _pools(fed)
    federated = fed.exchange(fed.issuer.token(fed.audience)).json()["access_token"]
    srv.owner("PATCH", f"{pools}/cluster/providers/k8s-oidc?updateMask=disabled", {"disabled": True})
    try:
        refused = fed.exchange(fed.issuer.token(fed.audience))
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
        assert _get_account(fed, federated).status_code == 200  # Google: a disabled provider's tokens still work
    finally:
        srv.owner("PATCH", f"{pools}/cluster/providers/k8s-oidc?updateMask=disabled", {"disabled": False})
    srv.owner("PATCH", f"{pools}/cluster?updateMask=disabled", {"disabled": True})
    try:
        assert fed.exchange(fed.issuer.token(fed.audience)).json()["error"] == "invalid_target"
        assert _get_account(fed, federated).status_code == 401  # a disabled pool's tokens do not
    finally:
        srv.owner("PATCH", f"{pools}/cluster?updateMask=disabled", {"disabled": False})
    assert _get_account(fed, federated).status_code == 200
    srv.owner("DELETE", f"{pools}/cluster/providers/k8s-oidc")
    try:
        assert _get_account(fed, federated).status_code == 401
        assert fed.exchange(fed.issuer.token(fed.audience)).json()["error"] == "invalid_target"
    finally:
        srv.owner("POST", f"{pools}/cluster/providers/k8s-oidc:undelete", {})
    assert _get_account(fed, federated).status_code == 200


# ---------------------------------------------------------------- google-auth, unchanged


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_google_auth_identity_pool_file_source(fed: Federation, fmt: str) -> None:
    token_file = fed.write_token(f"token-{fmt}", fed.issuer.token(fed.audience), fmt)
    info = json.loads(fed.credential_file(f"cred-{fmt}.json", token_file, fmt=fmt).read_text())
    creds = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    creds.refresh(Request())
    assert creds.token.startswith("ya29.")
    assert _get_account(fed, creds.token).status_code == 200


def test_google_auth_impersonation_and_id_token(fed: Federation) -> None:
    token_file = fed.write_token("token-imp", fed.issuer.token(fed.audience))
    info = json.loads(fed.credential_file("cred-imp.json", token_file, impersonate=True).read_text())
    creds = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    creds.refresh(Request())
    info_r = requests.get(f"{fed.server.url}/tokeninfo", params={"access_token": creds.token}, timeout=30)
    assert info_r.status_code == 200 and info_r.json()["email"] == fed.account
    # A workload whose namespace fails the condition gets nothing.
    fed.write_token("token-imp", fed.issuer.token(fed.audience, namespace="dev"))
    refused = identity_pool.Credentials.from_info(info, scopes=[CLOUD])
    with pytest.raises(Exception, match="unauthorized_client"):
        refused.refresh(Request())


def test_google_auth_through_the_proxy_with_id_token(fed: Federation) -> None:
    """google-auth's default URLs (sts.googleapis.com, iamcredentials.googleapis.com) through keyless's proxy: an
    impersonated access token and an ID token for the account, with no key anywhere."""
    token_file = fed.write_token("token-proxy", fed.issuer.token(fed.audience), "json")
    cred = fed.credential_file("cred-proxy.json", token_file, fmt="json", impersonate=True,
                               token_url="https://sts.googleapis.com/v1/token",
                               impersonation_base="https://iamcredentials.googleapis.com")
    script = f"""
import json, google.auth
from google.auth import identity_pool, impersonated_credentials
from google.auth.transport.requests import Request
creds, _ = google.auth.default(scopes=[{CLOUD!r}])
creds.refresh(Request())
info = json.load(open({str(cred)!r}))
del info["service_account_impersonation_url"]
source = identity_pool.Credentials.from_info(info, scopes=[{CLOUD!r}])
target = impersonated_credentials.Credentials(source_credentials=source, target_principal={fed.account!r},
                                              target_scopes=[{CLOUD!r}])
idt = impersonated_credentials.IDTokenCredentials(target, target_audience="https://app.example", include_email=True)
idt.refresh(Request())
print(json.dumps({{"token": creds.token, "id_token": idt.token}}))
"""
    env = {k: v for k, v in fed.server.env().items() if not k.startswith(("GOOGLE_", "KEYLESS_"))}
    env.update(fed.env)
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(cred)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    info_r = requests.get(f"{fed.server.url}/tokeninfo", params={"access_token": result["token"]}, timeout=30)
    assert info_r.json()["email"] == fed.account
    claims = jwt.decode(result["id_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://app.example" and claims["email"] == fed.account



# ---------------------------------------------------------------- what tokeninfo and STS introspection say


def test_tokeninfo_of_a_federated_token_names_its_principal(fed: Federation) -> None:
    """tokeninfo answers for a federated token with its principal:// identifier as ``sub`` (never keyless's
    internal identity record) and no email: a pool's subject has none."""
    federated = fed.exchange(fed.issuer.token(fed.audience)).json()["access_token"]
    r = requests.get(f"{fed.server.url}/tokeninfo", params={"access_token": federated}, timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()
    member = f"principal://iam.googleapis.com/{fed.pool}/subject/system:serviceaccount:prod:builder"
    assert info["sub"] == member
    assert "email" not in info and "email_verified" not in info
    assert info["scope"] == CLOUD and int(info["expires_in"]) > 3500


def test_sts_introspect_answers_as_google_sts_does(fed: Federation) -> None:
    """``POST https://sts.googleapis.com/v1/introspect`` (RFC 7662), which gcloud calls to name an external
    account it signs in with: ``active``, ``username`` the principal, ``sub``, ``scope``, ``exp``, ``iat``; an
    unknown, expired or revoked token is ``{"active": false}``."""
    federated = fed.exchange(fed.issuer.token(fed.audience)).json()["access_token"]
    url = f"{fed.server.url}/v1/introspect"
    gcloud_client = ("32555940559.apps.googleusercontent.com", "ZmssLNjJy2998hD4CTg2ejr2")  # gcloud's public client
    r = requests.post(url, data={"token": federated, "token_type_hint": "urn:ietf:params:oauth:token-type:access_token"},
                      auth=gcloud_client, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    member = f"principal://iam.googleapis.com/{fed.pool}/subject/system:serviceaccount:prod:builder"
    assert body["active"] is True and body["username"] == member and body["sub"] == member
    assert body["scope"] == CLOUD and body["exp"] - body["iat"] == 3600
    assert requests.post(url, data={"token": "ya29.not-a-token"}, timeout=30).json() == {"active": False}
    missing = requests.post(url, data={}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    # A service account's token: its email.
    account_token = requests.post(
        f"{fed.server.url}/v1/projects/-/serviceAccounts/{fed.account}:generateAccessToken",
        json={"scope": [CLOUD]}, headers={"Authorization": f"Bearer {federated}"}, timeout=30).json()["accessToken"]
    assert requests.post(url, data={"token": account_token}, timeout=30).json()["username"] == fed.account
