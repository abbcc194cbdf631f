"""Node client libraries (spec §2.2) against a real keyless: google-auth-library, googleapis, iam-credentials.

Each scenario in ``tests/compat/node/scenarios`` is one Node process that runs several named steps and prints
their results as one JSON line; a process is run once per distinct (script, arguments, environment) and the
tests below each assert on their own step. A step's result is either the values it observed (tokens are
checked against keyless's tokeninfo, signatures against the account's published certificates, ID tokens with
the library's own verifier) or ``{"error": …}``; steps that are meant to fail return ``{"rejected": …}``.

Routes: the documented knob (``endpoint``/``endpoints``/``rootUrl``/``apiEndpoint`` options, a file key,
``GCE_METADATA_HOST``/``GCE_METADATA_IP``) with no proxy in the environment, or ``proxy``: exactly what
``keyless env`` prints (HTTPS_PROXY, NO_PROXY, NODE_EXTRA_CA_CERTS, …), the library keeping Google's URLs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import CompatEnv
from tests.compat.federation_support import wif_world
from tests.conftest import CLOUD, REPO

NODE_DIR = REPO / "tests" / "compat" / "node"
SCENARIOS = NODE_DIR / "scenarios"
AUDIENCE = "https://keyless-node-compat.example.com"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")

GAL = "google-auth-library 10.9.1"
GOOGLEAPIS = "googleapis 178.0.0"
GAX = "@google-cloud/iam-credentials 4.2.2"

# Variables a Node process must not inherit from the test runner: only the row decides them.
_SCRUB_PREFIXES = ("GOOGLE_", "GCE_", "KEYLESS_", "CLOUDSDK_", "NODE_", "NPM_", "npm_")
_SCRUB = {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
          "all_proxy", "METADATA_SERVER_DETECTION", "DETECT_GCP_RETRIES", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
          "CURL_CA_BUNDLE"}


# ---------------------------------------------------------------- running scenarios


@pytest.fixture(scope="module")
def node_modules() -> Iterator[Path]:
    """``npm ci`` in tests/compat/node: exactly the versions package-lock.json pins.

    ``npm ci`` deletes and rewrites node_modules, so a second pytest session using this folder at the same time
    would break the first one's Node processes (or npm itself, ENOTEMPTY). The module holds an exclusive lock
    on the folder from ``npm ci`` until its last scenario has run; a concurrent session blocks on it."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm must be installed"
    digest = hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"keyless-compat-node-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"npm ci failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        yield NODE_DIR / "node_modules"


class Node:
    """Runs scenario scripts with a scrubbed environment; each distinct run happens once per module."""

    def __init__(self, compat: CompatEnv, home: Path) -> None:
        self.compat = compat
        self.home = home
        self._cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def base_env(self, *, proxy: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES) and k not in _SCRUB}
        env["HOME"] = str(self.home)  # no ~/.config/gcloud/application_default_credentials.json
        if proxy:
            env.update(self.compat.env)
            env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)  # the row decides, never `keyless adc` leftovers
        c = self.compat
        env.update({
            "KEYLESS_URL": c.server.url,
            "OWNER_FILE": str(c.server.owner_file),
            "SOURCE_KEY": str(c.source_key),
            "TARGET": c.target,
            "SOURCE": c.source,
            "ATTACHED": c.attached,
            "DENIED": c.denied,
            "AUDIENCE": AUDIENCE,
        })
        return env

    def run(self, script: str, *args: str, proxy: bool, extra: dict[str, str] | None = None) -> dict[str, Any]:
        key = (script, args, proxy, tuple(sorted((extra or {}).items())))
        if key not in self._cache:
            env = self.base_env(proxy=proxy)
            env.update(extra or {})
            proc = subprocess.run(["node", str(SCENARIOS / script), *args], capture_output=True, text=True,
                                  env=env, cwd=self.compat.workdir, timeout=120)
            lines = proc.stdout.strip().splitlines()
            try:
                result = json.loads(lines[-1])
            except (IndexError, ValueError):
                raise AssertionError(f"node {script} {' '.join(args)} printed no JSON (exit {proc.returncode}):\n"
                                     f"stdout: {proc.stdout}\nstderr: {proc.stderr}") from None
            result["_exit"] = proc.returncode
            result["_stderr"] = proc.stderr[-4000:]
            self._cache[key] = result
        return self._cache[key]


@pytest.fixture(scope="module")
def node(compat: CompatEnv, node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Node:
    return Node(compat, tmp_path_factory.mktemp("node-home"))


def step(result: dict[str, Any], name: str) -> Any:
    """One step's result; fails with what the library raised if the step errored."""
    assert name in result, f"step {name!r} missing: {result}"
    value = result[name]
    assert not (isinstance(value, dict) and "error" in value), f"{name} failed: {json.dumps(value['error'])}"
    return value


def rejected(result: dict[str, Any], name: str) -> dict[str, Any]:
    value = step(result, name)
    assert "rejected" in value, f"{name}: expected a rejection, got {value}"
    return dict(value["rejected"])


# ---------------------------------------------------------------- assertions on real behaviour


def assert_access_token(observed: dict[str, Any], email: str, scope: str = CLOUD) -> dict[str, Any]:
    """``observed`` is keyless's tokeninfo for the token the library handed back."""
    assert observed["status"] == 200, f"keyless does not accept the token: {observed}"
    info = observed["body"]
    assert info["email"] == email
    assert scope in info["scope"].split()
    assert int(info["expires_in"]) > 0
    return dict(info)


def assert_id_token(payload: dict[str, Any], email: str, audience: str = AUDIENCE) -> None:
    """``payload`` came out of google-auth-library's verifyIdToken (signature checked with keyless's certs)."""
    assert payload["aud"] == audience
    assert payload["email"] == email
    assert payload["email_verified"] is True
    assert payload["iss"] in GOOGLE_ISSUERS
    assert 0 < payload["exp"] - payload["iat"] <= 3600


def assert_signed(check: dict[str, Any], returned_key_id: str | None = None) -> None:
    assert check["verified"] is True, f"signature does not verify with the published certificates: {check}"
    assert check["keyId"] in check["publishedKids"]
    if returned_key_id is not None:
        assert check["keyId"] == returned_key_id


def assert_denied(err: dict[str, Any], permission: str) -> None:
    assert err["status"] == 403 or err.get("httpStatus") == 403, err
    if "data" in err:
        assert err["data"]["error"]["status"] == "PERMISSION_DENIED"
        assert err["data"]["error"]["details"][0]["metadata"]["permission"] == permission
    else:  # gax REST puts the raw JSON body in the message
        body = json.loads(err["message"])
        assert body["error"]["status"] == "PERMISSION_DENIED"
        assert permission in body["error"]["message"]


def rows(client: str, call: str, *routes: str) -> Callable[[Any], Any]:
    """Parametrize a test over ``routes``, each one a row of the compatibility table."""
    return pytest.mark.parametrize("route", [
        pytest.param(r, id=r, marks=pytest.mark.compat(section="2.2", client=client, call=call, route=r))
        for r in routes])


# ---------------------------------------------------------------- Impersonated (endpoint option / proxy)

IMP_ENDPOINT = "endpoint option"
IMP_ROUTES = {IMP_ENDPOINT: ("endpoint", False), "proxy": ("proxy", True)}


def impersonated(node: Node, route: str) -> dict[str, Any]:
    arg, proxy = IMP_ROUTES[route]
    result = node.run("impersonated.js", arg, proxy=proxy)
    expected = node.compat.server.url if route == IMP_ENDPOINT else "https://iamcredentials.googleapis.com"
    assert result["endpoint"] == expected
    return result


@rows(GAL, "Impersonated.getAccessToken", IMP_ENDPOINT, "proxy")
def test_impersonated_get_access_token(node: Node, route: str) -> None:
    got = step(impersonated(node, route), "getAccessToken")
    assert_access_token(got["tokeninfo"], node.compat.target)
    # lifetime: 600 was sent as "600s"; expireTime came back parseable and 10 minutes out.
    assert 590_000 <= got["expiryDate"] - got["now"] <= 610_000


@rows(GAL, "Impersonated.sign", IMP_ENDPOINT, "proxy")
def test_impersonated_sign(node: Node, route: str) -> None:
    got = step(impersonated(node, route), "sign")
    assert_signed(got, got["keyId"])


@rows(GAL, "Impersonated.fetchIdToken", IMP_ENDPOINT, "proxy")
def test_impersonated_fetch_id_token(node: Node, route: str) -> None:
    got = step(impersonated(node, route), "fetchIdToken")
    assert_id_token(got["payload"], node.compat.target)
    assert got["header"]["alg"] == "RS256" and got["header"]["kid"]


@rows(GAL, "Impersonated getAccessToken/sign/fetchIdToken on a target without a role", IMP_ENDPOINT, "proxy")
def test_impersonated_denied(node: Node, route: str) -> None:
    result = impersonated(node, route)
    err = rejected(result, "deniedGetAccessToken")
    assert_denied(err, "iam.serviceAccounts.getAccessToken")
    assert err["message"].startswith("PERMISSION_DENIED: unable to impersonate: Permission "), err["message"]
    assert_denied(rejected(result, "deniedSign"), "iam.serviceAccounts.signBlob")
    assert_denied(rejected(result, "deniedFetchIdToken"), "iam.serviceAccounts.getOpenIdToken")


# ---------------------------------------------------------------- GoogleAuth with each ADC file type

ADC_IMP_KEY = 'file "endpoint" key (source refresh via proxy)'


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def impersonated_file(compat: CompatEnv, name: str, target: str, endpoint: str | None) -> Path:
    """What `gcloud auth application-default login --impersonate-service-account` writes (+ "endpoint")."""
    data: dict[str, Any] = {
        "type": "impersonated_service_account",
        "service_account_impersonation_url":
            f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
        "source_credentials": json.loads(compat.server.owner_file.read_text()),
        "delegates": [],
    }
    if endpoint is not None:
        data["endpoint"] = endpoint
    folder = compat.workdir / "node-adc"
    folder.mkdir(exist_ok=True)
    return _write(folder / name, data)


def adc_impersonated(node: Node, route: str) -> dict[str, Any]:
    c = node.compat
    endpoint = c.server.url if route == ADC_IMP_KEY else None
    tag = "endpoint" if endpoint else "default"
    extra = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(impersonated_file(c, f"imp-{tag}.json", c.target, endpoint)),
        "DENIED_FILE": str(impersonated_file(c, f"imp-{tag}-denied.json", c.denied, endpoint)),
    }
    if endpoint:
        extra["BOGUS_ENDPOINT_FILE"] = str(
            impersonated_file(c, "imp-bogus-endpoint.json", c.target, f"{c.server.url}/not-iamcredentials"))
    return node.run("adc.js", "impersonated_service_account", proxy=True, extra=extra)


@rows(GAL, "GoogleAuth (ADC impersonated_service_account file).getAccessToken", ADC_IMP_KEY, "proxy")
def test_adc_impersonated_get_access_token(node: Node, route: str) -> None:
    got = step(adc_impersonated(node, route), "getAccessToken")
    assert got["client"] == "Impersonated"
    assert got["endpoint"] == (node.compat.server.url if route == ADC_IMP_KEY
                               else "https://iamcredentials.googleapis.com")
    assert_access_token(got["tokeninfo"], node.compat.target)
    assert got["requestTokeninfo"] == {"status": 200, "email": node.compat.target}


@rows(GAL, "GoogleAuth (ADC impersonated_service_account file).getIdTokenClient", ADC_IMP_KEY, "proxy")
def test_adc_impersonated_id_token(node: Node, route: str) -> None:
    assert_id_token(step(adc_impersonated(node, route), "getIdTokenClient")["payload"], node.compat.target)


@rows(GAL, "GoogleAuth (ADC impersonated_service_account file).sign", ADC_IMP_KEY, "proxy")
def test_adc_impersonated_sign(node: Node, route: str) -> None:
    assert_signed(step(adc_impersonated(node, route), "sign"))


@rows(GAL, "GoogleAuth (ADC impersonated_service_account file) on a target without a role", ADC_IMP_KEY, "proxy")
def test_adc_impersonated_denied(node: Node, route: str) -> None:
    err = rejected(adc_impersonated(node, route), "denied")
    assert_denied(err, "iam.serviceAccounts.getAccessToken")
    assert err["message"].startswith("PERMISSION_DENIED: unable to impersonate:"), err["message"]


@pytest.mark.compat(section="2.2", client=GAL, call='ADC impersonated_service_account file: "endpoint" key decides '
                    "the IAM host", route=ADC_IMP_KEY)
def test_adc_impersonated_endpoint_key_is_what_routes(node: Node) -> None:
    # Same file, "endpoint" under a path keyless does not serve: the call lands there (404 from keyless), so
    # the key, not the proxy, is what sent the passing rows above to keyless.
    err = rejected(adc_impersonated(node, ADC_IMP_KEY), "bogusEndpoint")
    assert err["url"].startswith(f"{node.compat.server.url}/not-iamcredentials/v1/projects/-/serviceAccounts/")
    assert err["httpStatus"] == 404
    assert err["message"].startswith("NOT_FOUND: unable to impersonate:"), err["message"]


def adc_file(node: Node, kind: str) -> dict[str, Any]:
    c = node.compat
    path = c.source_key if kind == "service_account" else c.server.owner_file
    return node.run("adc.js", kind, proxy=True, extra={"GOOGLE_APPLICATION_CREDENTIALS": str(path)})


@rows(GAL, "GoogleAuth (ADC service_account file).getAccessToken", "proxy")
def test_adc_service_account_get_access_token(node: Node, route: str) -> None:
    got = step(adc_file(node, "service_account"), "getAccessToken")
    assert got["client"] == "JWT"
    assert_access_token(got["tokeninfo"], node.compat.source)
    assert got["requestTokeninfo"] == {"status": 200, "email": node.compat.source}


@rows(GAL, "GoogleAuth (ADC service_account file).getIdTokenClient", "proxy")
def test_adc_service_account_id_token(node: Node, route: str) -> None:
    assert_id_token(step(adc_file(node, "service_account"), "getIdTokenClient")["payload"], node.compat.source)


@rows(GAL, "GoogleAuth (ADC service_account file).sign (local key, published by keyless)", "proxy")
def test_adc_service_account_sign(node: Node, route: str) -> None:
    got = step(adc_file(node, "service_account"), "sign")
    assert_signed(got, json.loads(node.compat.source_key.read_text())["private_key_id"])


@rows(GAL, "GoogleAuth (ADC authorized_user file).getAccessToken", "proxy")
def test_adc_authorized_user(node: Node, route: str) -> None:
    got = step(adc_file(node, "authorized_user"), "getAccessToken")
    assert got["client"] == "UserRefreshClient"
    assert_access_token(got["tokeninfo"], "owner@keyless.local")
    assert got["requestTokeninfo"] == {"status": 200, "email": "owner@keyless.local"}


# ---------------------------------------------------------------- JWT (service-account key), via proxy only


@rows(GAL, "JWT.getAccessToken (key file; assertion without kid)", "proxy")
def test_jwt_get_access_token(node: Node, route: str) -> None:
    got = step(node.run("jwt.js", proxy=True), "getAccessToken")
    assert_access_token(got["tokeninfo"], node.compat.source)
    assert 3_500_000 <= got["expiryDate"] - got["now"] <= 3_610_000


@rows(GAL, "JWT.fetchIdToken (key file)", "proxy")
def test_jwt_fetch_id_token(node: Node, route: str) -> None:
    got = step(node.run("jwt.js", proxy=True), "fetchIdToken")
    assert_id_token(got["payload"], node.compat.source)


@rows(GAL, "JWT.getAccessToken with a key keyless never issued", "proxy")
def test_jwt_unknown_key(node: Node, route: str) -> None:
    err = rejected(node.run("jwt.js", proxy=True), "unknownKey")
    assert err["httpStatus"] == 400
    assert err["data"]["error"] == "invalid_grant"
    assert err["message"].startswith("invalid_grant: ")  # gtoken's "<error>: <error_description>"


# ---------------------------------------------------------------- UserRefreshClient / OAuth2Client

ENDPOINTS = "endpoints option"
USER_ROUTES = {ENDPOINTS: ("endpoints", False), "proxy": ("proxy", True)}


def user_refresh(node: Node, route: str) -> dict[str, Any]:
    arg, proxy = USER_ROUTES[route]
    result = node.run("user_refresh.js", arg, proxy=proxy)
    expected = f"{node.compat.server.url}/token" if route == ENDPOINTS else "https://oauth2.googleapis.com/token"
    assert result["tokenUrl"] == expected
    return result


@rows(GAL, "UserRefreshClient.getAccessToken (refresh_token grant)", ENDPOINTS, "proxy")
def test_user_refresh(node: Node, route: str) -> None:
    got = step(user_refresh(node, route), "refresh")
    assert_access_token(got["tokeninfo"], "owner@keyless.local")
    assert got["authorization"] is True
    assert got["getServiceAccount"] == {"status": 200, "email": node.compat.target}
    assert 3_500_000 <= got["expiryDate"] - got["now"] <= 3_610_000


@rows(GAL, "OAuth2Client.getAccessToken (setCredentials refresh_token)", ENDPOINTS, "proxy")
def test_oauth2client_refresh(node: Node, route: str) -> None:
    got = step(user_refresh(node, route), "oauth2ClientRefresh")
    assert_access_token(got["tokeninfo"], "owner@keyless.local")


@rows(GAL, "OAuth2Client.getTokenInfo", ENDPOINTS, "proxy")
def test_get_token_info(node: Node, route: str) -> None:
    result = user_refresh(node, route)
    got = step(result, "getTokenInfo")
    assert got["email"] == "owner@keyless.local"
    assert CLOUD in got["scopes"]
    assert 3_500_000 <= got["expiry_date"] - got["now"] <= 3_610_000
    err = rejected(result, "getTokenInfoInvalid")
    assert err["httpStatus"] == 400 and err["data"]["error"] == "invalid_token"


@rows(GAL, "OAuth2Client.verifyIdToken (certs from keyless)", ENDPOINTS, "proxy")
def test_verify_id_token(node: Node, route: str) -> None:
    result = user_refresh(node, route)
    got = step(result, "verifyIdToken")
    assert_id_token(got["payload"], node.compat.target)
    assert got["userId"] == got["payload"]["sub"]
    assert "Wrong recipient" in rejected(result, "verifyIdTokenWrongAudience")["message"]
    assert "Invalid token signature" in rejected(result, "verifyIdTokenTampered")["message"]


# ---------------------------------------------------------------- Compute / ADC on GCE (gcp-metadata)

HOST = "GCE_METADATA_HOST"
IP = "GCE_METADATA_IP"
KEYLESS_ENV = "proxy (keyless env incl. GCE_METADATA_HOST)"


@pytest.fixture(scope="module")
def attached_signs_itself(compat: CompatEnv) -> None:
    """GoogleAuth.sign on GCE calls signBlob on the attached account itself, which (as on Google) needs
    Token Creator on itself. Additive and idempotent: the shared server keeps every other binding."""
    path = f"/v1/projects/-/serviceAccounts/{compat.attached}"
    policy = compat.server.owner("POST", f"{path}:getIamPolicy?options.requestedPolicyVersion=3")
    member = f"serviceAccount:{compat.attached}"
    if not any(member in b.get("members", []) and b["role"] == "roles/iam.serviceAccountTokenCreator"
               for b in policy.get("bindings", [])):
        compat.server.grant(compat.attached, member)


def gce(node: Node, route: str) -> dict[str, Any]:
    metadata = node.compat.env["GCE_METADATA_HOST"]
    if route == HOST or route.startswith("endpoint"):
        return node.run("gce.js", "host", proxy=False, extra={"GCE_METADATA_HOST": metadata})
    if route == IP:
        return node.run("gce.js", "ip", proxy=False, extra={"GCE_METADATA_IP": metadata})
    return node.run("gce.js", "proxy", proxy=True)


@rows(GAL, "Compute.getAccessToken", HOST, IP, KEYLESS_ENV)
def test_compute_get_access_token(node: Node, attached_signs_itself: None, route: str) -> None:
    got = step(gce(node, route), "computeGetAccessToken")
    assert_access_token(got["tokeninfo"], node.compat.attached)
    assert 3_500_000 <= got["expiryDate"] - got["now"] <= 3_610_000


@rows(GAL, "GoogleAuth (ADC on GCE): getClient, getProjectId, getCredentials, getAccessToken", HOST, IP, KEYLESS_ENV)
def test_adc_gce(node: Node, attached_signs_itself: None, route: str) -> None:
    got = step(gce(node, route), "adc")
    assert got["client"] == "Compute"
    assert got["projectId"] == node.compat.server.project
    assert got["universeDomain"] == "googleapis.com"
    assert got["clientEmail"] == node.compat.attached
    assert_access_token(got["tokeninfo"], node.compat.attached)


@rows(GAL, "GoogleAuth.getIdTokenClient on GCE (metadata identity, format=full)", HOST, IP, KEYLESS_ENV)
def test_gce_id_token(node: Node, attached_signs_itself: None, route: str) -> None:
    got = step(gce(node, route), "getIdTokenClient")
    payload = got["payload"]
    assert_id_token(payload, node.compat.attached)
    assert payload["google"]["compute_engine"]["project_id"] == node.compat.server.project


@rows(GAL, "GoogleAuth.sign on GCE (signBlob as the attached account)", "endpoint argument + GCE_METADATA_HOST",
      KEYLESS_ENV)
def test_google_auth_sign(node: Node, attached_signs_itself: None, route: str) -> None:
    assert_signed(step(gce(node, route), "sign"))


@rows(GAL, "Impersonated with a Compute source client", "endpoint option + GCE_METADATA_HOST", KEYLESS_ENV)
def test_impersonated_from_compute(node: Node, attached_signs_itself: None, route: str) -> None:
    got = step(gce(node, route), "impersonateFromCompute")
    assert_access_token(got["tokeninfo"], node.compat.target)


# ---------------------------------------------------------------- googleapis discovery clients

ROOT = "rootUrl"
API_ROUTES = {ROOT: ("rootUrl", False), "proxy": ("proxy", True)}


def googleapis(node: Node, route: str) -> dict[str, Any]:
    arg, proxy = API_ROUTES[route]
    return node.run("googleapis.js", arg, proxy=proxy)


def _api_url(node: Node, route: str, host: str) -> str:
    return f"{node.compat.server.url}/v1/" if route == ROOT else f"https://{host}/v1/"


@rows(GOOGLEAPIS, "google.iamcredentials v1 projects.serviceAccounts.generateAccessToken", ROOT, "proxy")
def test_googleapis_generate_access_token(node: Node, route: str) -> None:
    got = step(googleapis(node, route), "generateAccessToken")
    assert got["url"].startswith(_api_url(node, route, "iamcredentials.googleapis.com"))
    info = assert_access_token(got["tokeninfo"], node.compat.target)
    assert 290 <= int(info["expires_in"]) <= 300
    assert got["expireTime"].endswith("Z") and "." not in got["expireTime"]


@rows(GOOGLEAPIS, "google.iamcredentials v1 projects.serviceAccounts.generateIdToken", ROOT, "proxy")
def test_googleapis_generate_id_token(node: Node, route: str) -> None:
    assert_id_token(step(googleapis(node, route), "generateIdToken")["payload"], node.compat.target)


@rows(GOOGLEAPIS, "google.iamcredentials v1 projects.serviceAccounts.signBlob", ROOT, "proxy")
def test_googleapis_sign_blob(node: Node, route: str) -> None:
    got = step(googleapis(node, route), "signBlob")
    assert_signed(got, got["keyId"])


@rows(GOOGLEAPIS, "google.iamcredentials v1 projects.serviceAccounts.signJwt", ROOT, "proxy")
def test_googleapis_sign_jwt(node: Node, route: str) -> None:
    got = step(googleapis(node, route), "signJwt")
    assert_signed(got, got["keyId"])
    assert got["header"]["alg"] == "RS256" and got["header"]["kid"] == got["keyId"]
    assert got["payload"] == got["sent"]


@rows(GOOGLEAPIS, "google.iamcredentials v1 generateAccessToken on a target without a role", ROOT, "proxy")
def test_googleapis_denied(node: Node, route: str) -> None:
    err = rejected(googleapis(node, route), "denied")
    assert_denied(err, "iam.serviceAccounts.getAccessToken")
    assert err["message"].startswith("Permission 'iam.serviceAccounts.getAccessToken' denied")


@rows(GOOGLEAPIS, "google.iam v1 projects.serviceAccounts.get", ROOT, "proxy")
def test_googleapis_iam_get(node: Node, route: str) -> None:
    got = step(googleapis(node, route), "iamGet")
    assert got["url"].startswith(_api_url(node, route, "iam.googleapis.com"))
    assert got["email"] == node.compat.target
    assert got["name"] == f"projects/{node.compat.server.project}/serviceAccounts/{node.compat.target}"
    assert got["uniqueId"].isdigit()


@rows(GOOGLEAPIS, "google.iam v1 projects.serviceAccounts.list", ROOT, "proxy")
def test_googleapis_iam_list(node: Node, route: str) -> None:
    emails = step(googleapis(node, route), "iamList")["emails"]
    c = node.compat
    assert {c.target, c.source, c.attached, c.denied} <= set(emails)


@rows(GOOGLEAPIS, "google.iam v1 projects.serviceAccounts.getIamPolicy", ROOT, "proxy")
def test_googleapis_iam_get_iam_policy(node: Node, route: str) -> None:
    policy = step(googleapis(node, route), "iamGetIamPolicy")
    creators = {m for b in policy["bindings"] if b["role"] == "roles/iam.serviceAccountTokenCreator"
                for m in b["members"]}
    c = node.compat
    assert {"user:owner@keyless.local", f"serviceAccount:{c.source}", f"serviceAccount:{c.attached}"} <= creators
    assert policy["etag"]


# ---------------------------------------------------------------- IAMCredentialsClient (gax REST fallback)

GAX_ROUTE = "fallback REST: apiEndpoint/port/protocol http"
GAX_MODES = {"authClient": "IAMCredentialsClient({authClient})",
             "credentials": "IAMCredentialsClient({credentials}) (self-signed JWT)"}


def gax(node: Node, mode: str) -> dict[str, Any]:
    return node.run("gax.js", mode, proxy=False)


def gax_rows(verb: str) -> Callable[[Any], Any]:
    return pytest.mark.parametrize("mode", [
        pytest.param(mode, id=mode, marks=pytest.mark.compat(section="2.2", client=GAX,
                                                                call=f"{label}.{verb}", route=GAX_ROUTE))
        for mode, label in GAX_MODES.items()])


@gax_rows("generateAccessToken")
def test_gax_generate_access_token(node: Node, mode: str) -> None:
    got = step(gax(node, mode), "generateAccessToken")
    info = assert_access_token(got["tokeninfo"], node.compat.target)
    assert 290 <= int(info["expires_in"]) <= 300
    assert 290 <= got["expireTime"]["seconds"] - got["now"] / 1000 <= 301


@gax_rows("generateIdToken")
def test_gax_generate_id_token(node: Node, mode: str) -> None:
    assert_id_token(step(gax(node, mode), "generateIdToken")["payload"], node.compat.target)


@gax_rows("signBlob")
def test_gax_sign_blob(node: Node, mode: str) -> None:
    got = step(gax(node, mode), "signBlob")
    assert_signed(got, got["keyId"])


@gax_rows("signJwt")
def test_gax_sign_jwt(node: Node, mode: str) -> None:
    got = step(gax(node, mode), "signJwt")
    assert_signed(got, got["keyId"])
    assert got["header"]["kid"] == got["keyId"]
    assert got["payload"] == got["sent"]


@gax_rows("generateAccessToken on a target without a role")
def test_gax_denied(node: Node, mode: str) -> None:
    err = rejected(gax(node, mode), "denied")
    assert err["code"] == 403
    assert_denied(err, "iam.serviceAccounts.getAccessToken")


# ---------------------------------------------------------------- IAMCredentialsClient() on gRPC, through the proxy

GAX_GRPC_ROUTE = "proxy (gRPC: h2 relayed to the gRPC listener)"


def gax_grpc(node: Node) -> dict[str, Any]:
    """``new IAMCredentialsClient()``: no options, its default gRPC transport, ADC the owner's authorized_user file."""
    return node.run("gax_grpc.js", proxy=True,
                    extra={"GOOGLE_APPLICATION_CREDENTIALS": str(node.compat.server.owner_file)})


def gax_grpc_row(call: str) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.2", client=GAX, call=f"IAMCredentialsClient().{call}", route=GAX_GRPC_ROUTE)


@gax_grpc_row("generateAccessToken")
def test_gax_grpc_generate_access_token(node: Node) -> None:
    got = step(gax_grpc(node), "generateAccessToken")
    info = assert_access_token(got["tokeninfo"], node.compat.target)
    assert 290 <= int(info["expires_in"]) <= 300
    entries = node.compat.server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    agents = [e["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] for e in entries
              if e["protoPayload"]["methodName"] == "GenerateAccessToken"
              and e["protoPayload"]["request"].get("lifetime") == "300s"]
    assert any("grpc-node-js" in agent for agent in agents), agents  # it came over gRPC


@gax_grpc_row("signBlob")
def test_gax_grpc_sign_blob(node: Node) -> None:
    got = step(gax_grpc(node), "signBlob")
    assert_signed(got, got["keyId"])


@gax_grpc_row("generateAccessToken on a target without a role")
def test_gax_grpc_denied(node: Node) -> None:
    err = rejected(gax_grpc(node), "denied")
    assert err["code"] == 7, err  # grpc status PERMISSION_DENIED
    assert err["reason"] == "IAM_PERMISSION_DENIED" and err["domain"] == "iam.googleapis.com", err
    assert err["metadata"]["permission"] == "iam.serviceAccounts.getAccessToken"


# ---------------------------------------------------------------- external_account (workload identity federation)


def external_account(node: Node, route: str, impersonate: bool) -> dict[str, Any]:
    """``GoogleAuth`` with an external_account file whose subject token a stand-in Kubernetes issuer wrote:
    Google's URLs through the proxy, or keyless's own in the file (``token_url``)."""
    wif = wif_world(node.compat)
    direct = route != "proxy"
    name = f"node-{'imp' if impersonate else 'plain'}-{'direct' if direct else 'proxy'}"
    token_file = wif.base / f"{name}.token"
    token_file.write_text(wif.token())
    refused_token = wif.base / f"{name}-refused.token"
    refused_token.write_text(wif.token(namespace="dev"))
    cred = wif.credential_file(f"{name}.json", {"file": str(token_file)}, impersonate=impersonate, direct=direct)
    refused = wif.credential_file(f"{name}-refused.json", {"file": str(refused_token)}, impersonate=impersonate,
                                  direct=direct)
    extra = {"GOOGLE_APPLICATION_CREDENTIALS": str(cred), "REFUSED_FILE": str(refused)}
    if direct:  # else the library asks Google's Resource Manager for the external account's project
        extra["GOOGLE_CLOUD_PROJECT"] = "keyless-dev"
    return node.run("external_account.js", proxy=not direct, extra=extra)


@rows(GAL, "GoogleAuth (ADC external_account file, file-sourced).getAccessToken", "token_url", "proxy")
def test_external_account_get_access_token(node: Node, route: str) -> None:
    result = external_account(node, route, impersonate=False)
    got = step(result, "getAccessToken")
    assert got["client"] == "IdentityPoolClient"
    assert got["tokeninfo"]["status"] == 200, got
    assert got["tokeninfo"]["body"]["sub"] == wif_world(node.compat).member
    assert "rejected by the attribute condition" in json.dumps(rejected(result, "refused"))


@rows(GAL, "GoogleAuth (ADC external_account file with service_account_impersonation_url).getAccessToken",
      "token_url", "proxy")
def test_external_account_impersonated_get_access_token(node: Node, route: str) -> None:
    result = external_account(node, route, impersonate=True)
    got = step(result, "getAccessToken")
    assert got["client"] == "IdentityPoolClient"
    assert_access_token(got["tokeninfo"], wif_world(node.compat).account)
    assert "rejected by the attribute condition" in json.dumps(rejected(result, "refused"))
