"""Spec section 2.1: the real, unmodified Python client libraries against a real keyless.

Every row of the redirection table is driven through the knob the row names (a key file's ``token_uri``,
``iam_endpoint_override``, ``certs_url``, ``api_endpoint``, ``GCE_METADATA_HOST`` ...) where the library has
one, and through the interception proxy set up by ``keyless env`` (the library then calls its default Google
URLs). Rows reached through a knob run in this process (nothing here is read from the environment); rows that
depend on the environment (the proxy variables, ``GOOGLE_APPLICATION_CREDENTIALS``, ``GCE_METADATA_HOST``,
which google-auth reads at import time) run in fresh interpreters, several library calls per interpreter: each
call is a *step* whose outcome (value or exception) comes back as JSON, and the tests below check it against
keyless (tokens are used as bearers, signatures are verified with the published public keys, ID-token claims
are read after verifying the signature).
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from google.auth import exceptions as auth_exceptions
from google.auth import impersonated_credentials
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import Request
from google.oauth2 import credentials as user_credentials
from google.oauth2 import id_token, service_account

from tests.compat.conftest import CompatEnv
from tests.conftest import CLOUD

AUTH = f"google-auth {version('google-auth')}"
GAPIC = f"google-cloud-iam {version('google-cloud-iam')}"
DISCOVERY = f"google-api-python-client {version('google-api-python-client')}"
STORAGE = f"google-cloud-storage {version('google-cloud-storage')}"
REQUESTS = f"requests {version('requests')}"

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DEAD_TOKEN_URI = "http://127.0.0.1:9/token"  # nothing listens there: any use of token_uri fails
AUDIENCE = "https://compat.keyless.test/audience"
MESSAGE = "keyless compat: signed by the library"
OWNER = "user:owner@keyless.local"
OWNER_EMAIL = "owner@keyless.local"
GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"
PROJECT = "keyless-dev"


def row(client: str, call: str, route: str) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.1", client=client, call=call, route=route)


# ---------------------------------------------------------------- context shared by every row


@dataclass
class Ctx:
    compat: CompatEnv
    url: str
    target: str
    source: str
    attached: str
    denied: str
    source_key: Path  # token_uri = keyless
    google_key: Path  # token_uri = https://oauth2.googleapis.com/token (reachable only through the proxy)
    dead_key: Path  # token_uri = a closed port: proves a flow never calls the token endpoint
    owner_file: Path
    imp_adc: Path  # `keyless adc impersonate target`
    imp_adc_denied: Path  # `keyless adc impersonate denied`
    nogcloud: Path  # an empty CLOUDSDK_CONFIG so no gcloud ADC file is found
    uids: dict[str, str]

    @property
    def creators(self) -> set[str]:
        """Principals holding Token Creator on the target."""
        return {OWNER_EMAIL, self.source, self.attached}

    def resource(self, email: str) -> str:
        return f"projects/-/serviceAccounts/{email}"


def _key_with_token_uri(src: Path, dest: Path, token_uri: str) -> Path:
    info = json.loads(src.read_text())
    info["token_uri"] = token_uri
    dest.write_text(json.dumps(info))
    return dest


def _adc_impersonate(compat: CompatEnv, email: str, output: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "keyless", "--data-dir", str(compat.server.data_dir), "adc",
                           "impersonate", email, "--output", str(output)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(output.read_text())["type"] == "impersonated_service_account"
    return output


@pytest.fixture(scope="module")
def ctx(compat: CompatEnv, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    base = tmp_path_factory.mktemp("compat-python")
    srv = compat.server
    # compute_engine.IDTokenCredentials() signs its assertion with signBlob on the attached account itself; as
    # on Google, the account needs Token Creator on itself for that.
    path = f"/v1/projects/-/serviceAccounts/{compat.attached}:getIamPolicy?options.requestedPolicyVersion=3"
    policy = srv.owner("POST", path)
    member = f"serviceAccount:{compat.attached}"
    if not any(member in b.get("members", []) and b["role"] == "roles/iam.serviceAccountTokenCreator"
               for b in policy.get("bindings", [])):
        srv.grant(compat.attached, member)
    nogcloud = base / "gcloud"
    nogcloud.mkdir()
    uids = {e: str(srv.owner("GET", f"/v1/projects/-/serviceAccounts/{e}")["uniqueId"])
            for e in (compat.target, compat.source, compat.attached, compat.denied)}
    return Ctx(
        compat=compat, url=srv.url, target=compat.target, source=compat.source, attached=compat.attached,
        denied=compat.denied, source_key=compat.source_key,
        google_key=_key_with_token_uri(compat.source_key, base / "source-google.json", GOOGLE_TOKEN_URI),
        dead_key=_key_with_token_uri(compat.source_key, base / "source-dead.json", DEAD_TOKEN_URI),
        owner_file=srv.owner_file,
        imp_adc=_adc_impersonate(compat, compat.target, base / "imp-target.json"),
        imp_adc_denied=_adc_impersonate(compat, compat.denied, base / "imp-denied.json"),
        nogcloud=nogcloud, uids=uids)


# ---------------------------------------------------------------- checks made against keyless


def tokeninfo(ctx: Ctx, token: str) -> dict[str, Any]:
    r = requests.get(f"{ctx.url}/tokeninfo", params={"access_token": token}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def assert_bearer(ctx: Ctx, token: str, email: str) -> None:
    """``token`` is a keyless access token for ``email`` scoped cloud-platform that authenticates API calls."""
    assert token, "no token"
    info = tokeninfo(ctx, token)
    assert info["email"] == email, info
    assert CLOUD in info["scope"].split(), info
    r = requests.post(f"{ctx.url}/v1/projects/-/serviceAccounts/{ctx.target}:testIamPermissions",
                      json={"permissions": [GET_ACCESS_TOKEN]}, headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
    assert r.status_code == 200, r.text
    assert r.json().get("permissions", []) == ([GET_ACCESS_TOKEN] if email in ctx.creators else [])


def check_id_token(ctx: Ctx, token: str, email: str, *, audience: str = AUDIENCE, with_email: bool = True,
                   certs: str = "/oauth2/v1/certs") -> dict[str, Any]:
    """Verify an ID token's signature with keyless's published keys and check the claims Google would set."""
    claims = dict(id_token.verify_token(token, Request(), audience=audience, certs_url=f"{ctx.url}{certs}"))
    assert claims["iss"] in ("https://accounts.google.com", "accounts.google.com"), claims
    assert claims["aud"] == audience, claims
    assert claims["sub"] == ctx.uids[email], claims
    assert 0 < claims["exp"] - claims["iat"] <= 3600, claims
    if with_email:
        assert claims["email"] == email, claims
        assert claims["email_verified"] is True, claims
    return claims


def public_keys(ctx: Ctx, email: str) -> dict[str, Any]:
    r = requests.get(f"{ctx.url}/service_accounts/v1/metadata/x509/{email}", timeout=10)
    assert r.status_code == 200, r.text
    return {kid: x509.load_pem_x509_certificate(pem.encode()).public_key() for kid, pem in r.json().items()}


def verify_signature(ctx: Ctx, email: str, message: bytes, signature: bytes, key_id: str | None = None) -> str:
    """RSASSA-PKCS1-v1_5/SHA-256 over ``message`` by one of ``email``'s published keys; returns that key's id."""
    keys = public_keys(ctx, email)
    if key_id is not None:
        assert key_id in keys, f"key {key_id} is not published for {email}: {sorted(keys)}"
        keys = {key_id: keys[key_id]}
    for kid, key in keys.items():
        try:
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return kid
        except InvalidSignature:
            continue
    raise AssertionError(f"signature does not verify with any published key of {email}")


def verify_signed_url(ctx: Ctx, url: str, email: str, expires: int = 600) -> None:
    """Rebuild the V4 string-to-sign from the URL (Google's V4 signing process) and verify X-Goog-Signature."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "storage.googleapis.com"), url
    query, _, signature_hex = parts.query.partition("&X-Goog-Signature=")
    assert signature_hex, url
    params = dict(parse_qsl(query, keep_blank_values=True))
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == str(expires)
    assert params["X-Goog-SignedHeaders"] == "host"
    credential_email, _, scope = params["X-Goog-Credential"].partition("/")
    assert credential_email == email
    assert scope == f"{params['X-Goog-Date'][:8]}/auto/storage/goog4_request"
    canonical_query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in params.items()))
    assert canonical_query == query, "the URL's query is not the canonical query string"
    canonical_request = "\n".join(["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host",
                                   "UNSIGNED-PAYLOAD"])
    string_to_sign = "\n".join(["GOOG4-RSA-SHA256", params["X-Goog-Date"], scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    verify_signature(ctx, email, string_to_sign.encode(), bytes.fromhex(signature_hex))


def jwt_part(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def google_error(body: str | bytes, code: int = 403, status: str = "PERMISSION_DENIED") -> dict[str, Any]:
    """The Google JSON error carried in a library exception or response body."""
    text = body.decode() if isinstance(body, bytes) else body
    start = min(i for i in (text.find("{"), text.find("b'{")) if i >= 0)
    tail = text[start:]
    try:
        data = json.loads(tail)
    except ValueError:  # google-auth puts the parsed body's repr (a dict, or bytes) into its messages
        data = ast.literal_eval(tail)
        if isinstance(data, bytes):
            data = json.loads(data)
    err = data["error"]
    assert err["code"] == code and err["status"] == status, err
    return dict(err)


# ---------------------------------------------------------------- scenarios in fresh interpreters

PRELUDE = r'''
import base64, datetime, json, os, sys
URL = os.environ["KEYLESS_URL"]
CFG = json.loads(__CFG__)
CLOUD = "https://www.googleapis.com/auth/cloud-platform"
OUT = {}

def step(name):
    def run(fn):
        try:
            OUT[name] = {"ok": True, "value": fn()}
        except BaseException as exc:
            OUT[name] = {"ok": False, "type": type(exc).__module__ + "." + type(exc).__name__, "error": str(exc),
                         "detail": [str(a) for a in getattr(exc, "args", ())]}
        return fn
    return run
'''
EPILOGUE = r'''
print("\n@@STEPS@@" + json.dumps(OUT, default=str))
'''


class Steps(dict[str, dict[str, Any]]):
    def ok(self, name: str) -> Any:
        r = self[name]
        assert r["ok"], f"step {name} raised {r['type']}: {r['error']}"
        return r["value"]

    def failed(self, name: str) -> dict[str, Any]:
        r = self[name]
        assert not r["ok"], f"step {name} was expected to fail but returned {r['value']!r}"
        return r


def scenario(ctx: Ctx, body: str, cfg: dict[str, Any], *, proxy: bool, extra_env: dict[str, str] | None = None
             ) -> Steps:
    code = PRELUDE.replace("__CFG__", repr(json.dumps(cfg))) + body + EPILOGUE
    env = {"CLOUDSDK_CONFIG": str(ctx.nogcloud), **(extra_env or {})}
    proc = ctx.compat.run_python(code, extra_env=env, proxy=proxy, timeout=280)
    assert proc.returncode == 0 and "@@STEPS@@" in proc.stdout, f"scenario crashed:\n{proc.stdout}\n{proc.stderr}"
    return Steps(json.loads(proc.stdout.rsplit("@@STEPS@@", 1)[1]))


def base_cfg(ctx: Ctx) -> dict[str, Any]:
    return {"target": ctx.target, "source": ctx.source, "denied": ctx.denied, "attached": ctx.attached,
            "audience": AUDIENCE, "message": MESSAGE, "google_key": str(ctx.google_key),
            "dead_key": str(ctx.dead_key), "owner_file": str(ctx.owner_file)}


RAB_HELPER = r'''
def rab(creds):
    """An ordinary authorized API call, which starts google-auth's background allowedLocations lookup; wait for
    that thread, then make a second call and report what the credentials learnt and sent."""
    from google.auth.transport.requests import AuthorizedSession
    session = AuthorizedSession(creds)
    api = f"https://iam.googleapis.com/v1/projects/-/serviceAccounts/{CFG['target']}:testIamPermissions"
    first = session.post(api, json={"permissions": ["iam.serviceAccounts.get"]}, timeout=30)
    worker = creds._rab_manager.refresh_manager._worker
    if worker is None:
        raise RuntimeError("google-auth started no Regional Access Boundary lookup")
    worker.join(60)
    second = session.post(api, json={"permissions": ["iam.serviceAccounts.get"]}, timeout=30)
    return {"first": first.status_code, "second": second.status_code, "alive": worker.is_alive(),
            "encoded": creds.regional_access_boundary,
            "header": second.request.headers.get("x-allowed-locations")}
'''

PROXY_BODY = RAB_HELPER + r'''
from google.auth import iam, impersonated_credentials
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import Request
from google.oauth2 import credentials as user_credentials, id_token, service_account
import requests as rq

T, D, AUD, MSG = CFG["target"], CFG["denied"], CFG["audience"], CFG["message"].encode()
req = Request()
S = {}

def sa(key="google_key"):
    return service_account.Credentials.from_service_account_file(CFG[key], scopes=[CLOUD])

def imp(target, **kw):
    return impersonated_credentials.Credentials(source_credentials=sa(), target_principal=target,
                                                target_scopes=[CLOUD], lifetime=600, **kw)

def owner():
    return user_credentials.Credentials.from_authorized_user_file(CFG["owner_file"])

def b64(data):
    return base64.b64encode(data).decode()

@step("sa_refresh")
def _():
    c = sa(); c.refresh(req); S["sa_token"] = c.token
    return {"token": c.token}

@step("sa_idtoken")
def _():
    c = service_account.IDTokenCredentials.from_service_account_file(CFG["google_key"], target_audience=AUD)
    c.refresh(req); S["sa_id"] = c.token
    return {"token": c.token}

@step("imp_refresh")
def _():
    c = imp(T); c.refresh(req); S["imp"] = c
    return {"token": c.token, "expiry": c.expiry.isoformat()}

@step("imp_refresh_denied")
def _():
    c = imp(D); c.refresh(req)
    return {"token": c.token}

@step("imp_sign_bytes")
def _():
    return {"signature": b64(S["imp"].sign_bytes(MSG))}

@step("imp_sign_bytes_denied")
def _():
    return {"signature": b64(imp(D).sign_bytes(MSG))}

@step("imp_idtoken")
def _():
    c = impersonated_credentials.IDTokenCredentials(S["imp"], target_audience=AUD, include_email=True)
    c.refresh(req)
    return {"token": c.token}

@step("imp_idtoken_denied")
def _():
    c = impersonated_credentials.IDTokenCredentials(imp(D), target_audience=AUD, include_email=True)
    c.refresh(req)
    return {"token": c.token}

@step("imp_dwd")
def _():
    c = imp(T, subject="alice@example.com"); c.refresh(req)
    return {"token": c.token}

@step("iam_signer")
def _():
    return {"signature": b64(iam.Signer(req, sa(), T).sign(MSG))}

@step("iam_signer_denied")
def _():
    return {"signature": b64(iam.Signer(req, sa(), D).sign(MSG))}

@step("rab_requests")
def _():
    r = rq.get(f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{CFG['source']}/allowedLocations",
               headers={"Authorization": "Bearer " + S["sa_token"]}, timeout=30)
    return {"status": r.status_code, "body": r.json(), "content_type": r.headers.get("content-type")}

@step("rab_sa")
def _():
    return rab(sa())

@step("rab_imp")
def _():
    return rab(imp(T))

@step("verify_oauth2_token")
def _():
    return {"claims": dict(id_token.verify_oauth2_token(S["sa_id"], req, audience=AUD))}

@step("verify_oauth2_token_wrong_audience")
def _():
    return {"claims": dict(id_token.verify_oauth2_token(S["sa_id"], req, audience=AUD + "/other"))}

def blob():
    from google.cloud import storage
    client = storage.Client(project="keyless-dev", credentials=AnonymousCredentials())
    return client.bucket("compat-bucket").blob("dir/object name.txt")

@step("storage_token")
def _():
    return {"url": blob().generate_signed_url(version="v4", expiration=datetime.timedelta(seconds=600), method="GET",
                                              service_account_email=T, access_token=S["sa_token"])}

@step("storage_token_denied")
def _():
    return {"url": blob().generate_signed_url(version="v4", expiration=datetime.timedelta(seconds=600), method="GET",
                                              service_account_email=D, access_token=S["sa_token"])}

@step("storage_imp")
def _():
    return {"url": blob().generate_signed_url(version="v4", expiration=datetime.timedelta(seconds=600), method="GET",
                                              credentials=S["imp"])}

# google-cloud-iam IAMCredentialsClient over REST, default endpoint
def gapic(creds):
    from google.cloud import iam_credentials_v1
    return iam_credentials_v1.IAMCredentialsClient(credentials=creds, transport="rest")

@step("selfsigned")
def _():
    creds = service_account.Credentials.from_service_account_file(CFG["dead_key"])
    client = gapic(creds)
    resp = client.generate_access_token(name=f"projects/-/serviceAccounts/{T}", scope=[CLOUD])
    used = client._transport._credentials
    return {"token": resp.access_token, "bearer": used.token, "bearer_type": type(used).__name__}

@step("gapic_generate_access_token")
def _():
    from google.protobuf import duration_pb2
    resp = gapic(owner()).generate_access_token(name=f"projects/-/serviceAccounts/{T}", scope=[CLOUD],
                                                lifetime=duration_pb2.Duration(seconds=600))
    return {"token": resp.access_token, "expire": resp.expire_time.isoformat()}

@step("gapic_generate_id_token")
def _():
    resp = gapic(owner()).generate_id_token(name=f"projects/-/serviceAccounts/{T}", audience=AUD, include_email=True)
    return {"token": resp.token}

@step("gapic_sign_blob")
def _():
    resp = gapic(owner()).sign_blob(name=f"projects/-/serviceAccounts/{T}", payload=MSG)
    return {"key_id": resp.key_id, "signature": b64(resp.signed_blob)}

@step("gapic_sign_jwt")
def _():
    import time
    now = int(time.time())
    payload = json.dumps({"iss": T, "sub": T, "aud": AUD, "iat": now, "exp": now + 600, "compat": "proxy"})
    resp = gapic(owner()).sign_jwt(name=f"projects/-/serviceAccounts/{T}", payload=payload)
    return {"key_id": resp.key_id, "jwt": resp.signed_jwt}

@step("gapic_denied")
def _():
    try:
        gapic(owner()).generate_access_token(name=f"projects/-/serviceAccounts/{D}", scope=[CLOUD])
    except Exception as exc:
        return {"type": type(exc).__module__ + "." + type(exc).__name__, "code": getattr(exc, "code", None),
                "reason": getattr(exc, "reason", None), "body": exc.response.text}
    raise AssertionError("no error")

# googleapiclient discovery clients, default root URL
def discovery(name):
    from googleapiclient import discovery as d
    return d.build(name, "v1", credentials=owner(), static_discovery=True, cache_discovery=False)

@step("disc_generate_access_token")
def _():
    sas = discovery("iamcredentials").projects().serviceAccounts()
    resp = sas.generateAccessToken(name=f"projects/-/serviceAccounts/{T}",
                                   body={"scope": [CLOUD], "lifetime": "600s"}).execute()
    return {"token": resp["accessToken"], "expire": resp["expireTime"]}

@step("disc_generate_id_token")
def _():
    sas = discovery("iamcredentials").projects().serviceAccounts()
    return {"token": sas.generateIdToken(name=f"projects/-/serviceAccounts/{T}",
                                         body={"audience": AUD, "includeEmail": True}).execute()["token"]}

@step("disc_sign_blob")
def _():
    sas = discovery("iamcredentials").projects().serviceAccounts()
    resp = sas.signBlob(name=f"projects/-/serviceAccounts/{T}", body={"payload": b64(MSG)}).execute()
    return {"key_id": resp["keyId"], "signature": resp["signedBlob"]}

@step("disc_sign_jwt")
def _():
    import time
    now = int(time.time())
    payload = json.dumps({"iss": T, "sub": T, "aud": AUD, "iat": now, "exp": now + 600})
    sas = discovery("iamcredentials").projects().serviceAccounts()
    resp = sas.signJwt(name=f"projects/-/serviceAccounts/{T}", body={"payload": payload}).execute()
    return {"key_id": resp["keyId"], "jwt": resp["signedJwt"]}

@step("disc_denied")
def _():
    from googleapiclient.errors import HttpError
    sas = discovery("iamcredentials").projects().serviceAccounts()
    try:
        sas.generateAccessToken(name=f"projects/-/serviceAccounts/{D}", body={"scope": [CLOUD]}).execute()
    except HttpError as exc:
        return {"status": exc.status_code, "reason": exc.reason, "body": exc.content.decode()}
    raise AssertionError("no error")

@step("disc_iam_get")
def _():
    sas = discovery("iam").projects().serviceAccounts()
    return sas.get(name=f"projects/keyless-dev/serviceAccounts/{T}").execute()

@step("disc_iam_list")
def _():
    sas = discovery("iam").projects().serviceAccounts()
    return sas.list(name="projects/keyless-dev", pageSize=100).execute()
'''

ADC_BODY = r'''
import google.auth
from google.auth.transport.requests import Request
from google.oauth2 import id_token

req = Request()

def adc():
    creds, project = google.auth.default(scopes=[CLOUD])
    creds.refresh(req)
    return {"type": type(creds).__module__ + "." + type(creds).__name__, "project": project, "token": creds.token,
            "email": getattr(creds, "service_account_email", None)}

@step("default")
def _():
    return adc()

if CFG.get("id_token", True):
    @step("fetch_id_token")
    def _():
        return {"token": id_token.fetch_id_token(req, CFG["audience"])}

if CFG.get("denied_file"):
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = CFG["denied_file"]

    @step("default_denied")
    def _():
        return adc()

    @step("fetch_id_token_denied")
    def _():
        return {"token": id_token.fetch_id_token(req, CFG["audience"])}
'''

GCE_BODY = r'''
import google.auth
from google.auth import compute_engine
from google.auth.transport.requests import Request
from google.oauth2 import id_token

req = Request()

@step("env")
def _():
    return {k: os.environ.get(k) for k in ("HTTPS_PROXY", "GCE_METADATA_HOST", "GCE_METADATA_IP",
                                           "GOOGLE_APPLICATION_CREDENTIALS", "NO_GCE_CHECK")}

@step("default")
def _():
    creds, project = google.auth.default(scopes=[CLOUD])
    creds.refresh(req)
    return {"type": type(creds).__module__ + "." + type(creds).__name__, "project": project, "token": creds.token,
            "email": creds.service_account_email}

@step("compute")
def _():
    c = compute_engine.Credentials()
    c.refresh(req)
    return {"token": c.token, "email": c.service_account_email, "expiry": c.expiry.isoformat()}

@step("id_mds")
def _():
    c = compute_engine.IDTokenCredentials(req, CFG["audience"], use_metadata_identity_endpoint=True)
    c.refresh(req)
    return {"token": c.token}

@step("fetch_id_token")
def _():
    return {"token": id_token.fetch_id_token(req, CFG["audience"])}
'''

GCE_PROXY_BODY = RAB_HELPER + r'''
from google.auth import compute_engine
from google.auth.transport.requests import Request

req = Request()

@step("id_default")
def _():
    c = compute_engine.IDTokenCredentials(req, CFG["audience"])
    c.refresh(req)
    return {"token": c.token}

@step("id_token_uri")
def _():
    c = compute_engine.IDTokenCredentials(req, CFG["audience"], token_uri=URL + "/token")
    c.refresh(req)
    return {"token": c.token}

@step("rab_gce")
def _():
    return rab(compute_engine.Credentials())
'''


@pytest.fixture(scope="module")
def proxied(ctx: Ctx) -> Steps:
    return scenario(ctx, PROXY_BODY, base_cfg(ctx), proxy=True)


@pytest.fixture(scope="module")
def gce(ctx: Ctx) -> Steps:
    env = {k: ctx.compat.env[k] for k in ("GCE_METADATA_HOST", "GCE_METADATA_IP")}
    return scenario(ctx, GCE_BODY, base_cfg(ctx), proxy=False, extra_env=env)


@pytest.fixture(scope="module")
def gce_proxied(ctx: Ctx) -> Steps:
    return scenario(ctx, GCE_PROXY_BODY, base_cfg(ctx), proxy=True)


@pytest.fixture(scope="module")
def adc_sa(ctx: Ctx) -> Steps:
    return scenario(ctx, ADC_BODY, base_cfg(ctx), proxy=False,
                    extra_env={"GOOGLE_APPLICATION_CREDENTIALS": str(ctx.source_key)})


@pytest.fixture(scope="module")
def adc_sa_proxied(ctx: Ctx) -> Steps:
    return scenario(ctx, ADC_BODY, base_cfg(ctx), proxy=True,
                    extra_env={"GOOGLE_APPLICATION_CREDENTIALS": str(ctx.google_key)})


@pytest.fixture(scope="module")
def adc_imp(ctx: Ctx) -> Steps:
    return scenario(ctx, ADC_BODY, {**base_cfg(ctx), "denied_file": str(ctx.imp_adc_denied)}, proxy=True,
                    extra_env={"GOOGLE_APPLICATION_CREDENTIALS": str(ctx.imp_adc)})


@pytest.fixture(scope="module")
def adc_user(ctx: Ctx) -> Steps:
    return scenario(ctx, ADC_BODY, {**base_cfg(ctx), "id_token": False}, proxy=True,
                    extra_env={"GOOGLE_APPLICATION_CREDENTIALS": str(ctx.owner_file)})


# ---------------------------------------------------------------- in-process helpers (knob routes)


def sa_creds(path: Path, scopes: list[str] | None = None) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_file(str(path), scopes=scopes)


def owner_creds(ctx: Ctx) -> user_credentials.Credentials:
    return user_credentials.Credentials.from_authorized_user_file(str(ctx.owner_file)).with_token_uri(
        f"{ctx.url}/token")


def impersonate(ctx: Ctx, target: str, lifetime: int = 600) -> impersonated_credentials.Credentials:
    return impersonated_credentials.Credentials(
        source_credentials=sa_creds(ctx.source_key, [CLOUD]), target_principal=target, target_scopes=[CLOUD],
        lifetime=lifetime,
        iam_endpoint_override=f"{ctx.url}/v1/projects/-/serviceAccounts/{target}:generateAccessToken")


def gapic_client(ctx: Ctx, creds: Any) -> Any:
    from google.cloud import iam_credentials_v1

    return iam_credentials_v1.IAMCredentialsClient(credentials=creds, transport="rest",
                                                   client_options={"api_endpoint": ctx.url})


def discovery(ctx: Ctx, name: str, creds: Any) -> Any:
    from googleapiclient import discovery as disc

    return disc.build(name, "v1", credentials=creds, static_discovery=True, cache_discovery=False,
                      client_options={"api_endpoint": ctx.url})


def remaining(expiry: dt.datetime) -> float:
    return (expiry - dt.datetime.now(dt.UTC).replace(tzinfo=None)).total_seconds()


def signed_jwt_payload(ctx: Ctx, **extra: Any) -> str:
    now = int(time.time())
    return json.dumps({"iss": ctx.target, "sub": ctx.target, "aud": AUDIENCE, "iat": now, "exp": now + 600, **extra})


def check_signed_jwt(ctx: Ctx, signed: str, key_id: str, payload: str) -> None:
    assert jwt_part(signed, 0) == {"alg": "RS256", "kid": key_id, "typ": "JWT"}
    claims = id_token.verify_token(signed, Request(), audience=AUDIENCE,
                                   certs_url=f"{ctx.url}/service_accounts/v1/metadata/x509/{ctx.target}")
    assert claims == json.loads(payload)


# ================================================================ service_account.Credentials


@row(AUTH, "service_account.Credentials.refresh", "token_uri")
def test_sa_refresh_token_uri(ctx: Ctx) -> None:
    assert json.loads(ctx.source_key.read_text())["token_uri"] == f"{ctx.url}/token"
    creds = sa_creds(ctx.source_key, [CLOUD])
    creds.refresh(Request())
    assert creds.valid and creds.expiry is not None
    assert 3000 < remaining(creds.expiry) <= 3600
    assert_bearer(ctx, creds.token, ctx.source)


@row(AUTH, "service_account.Credentials.with_token_uri().refresh", "with_token_uri")
def test_sa_refresh_with_token_uri(ctx: Ctx) -> None:
    creds = sa_creds(ctx.google_key, [CLOUD]).with_token_uri(f"{ctx.url}/token")
    creds.refresh(Request())
    assert_bearer(ctx, creds.token, ctx.source)


@row(AUTH, "service_account.Credentials.refresh", "proxy")
def test_sa_refresh_proxy(ctx: Ctx, proxied: Steps) -> None:
    assert_bearer(ctx, proxied.ok("sa_refresh")["token"], ctx.source)


@row(GAPIC, "service_account.Credentials self-signed JWT (always_use_jwt_access) as bearer on IAMCredentialsClient",
     "api_endpoint")
def test_sa_self_signed_jwt_api_endpoint(ctx: Ctx) -> None:
    # The key file's token_uri is a closed port, so the call can only have been authorized by a self-signed JWT.
    creds = sa_creds(ctx.dead_key)
    client = gapic_client(ctx, creds)
    resp = client.generate_access_token(name=ctx.resource(ctx.target), scope=[CLOUD])
    assert_bearer(ctx, resp.access_token, ctx.target)
    bearer = client._transport._credentials.token
    claims = jwt_part(bearer, 1)
    assert claims["iss"] == claims["sub"] == ctx.source
    assert claims["aud"] == "https://iamcredentials.googleapis.com/"
    assert jwt_part(bearer, 0)["kid"] == json.loads(ctx.source_key.read_text())["private_key_id"]


@row(GAPIC, "service_account.Credentials self-signed JWT (always_use_jwt_access) as bearer on IAMCredentialsClient",
     "proxy")
def test_sa_self_signed_jwt_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("selfsigned")
    assert out["bearer_type"] == "Credentials"
    claims = jwt_part(out["bearer"], 1)
    assert claims["iss"] == claims["sub"] == ctx.source
    assert claims["aud"] == "https://iamcredentials.googleapis.com/"
    assert_bearer(ctx, out["token"], ctx.target)


# ================================================================ service_account.IDTokenCredentials


@row(AUTH, "service_account.IDTokenCredentials.refresh", "token_uri")
def test_sa_id_token_token_uri(ctx: Ctx) -> None:
    creds = service_account.IDTokenCredentials.from_service_account_file(str(ctx.source_key),
                                                                         target_audience=AUDIENCE)
    creds.refresh(Request())
    claims = check_id_token(ctx, creds.token, ctx.source)
    assert creds.expiry == dt.datetime.fromtimestamp(claims["exp"], dt.UTC).replace(tzinfo=None)


@row(AUTH, "service_account.IDTokenCredentials.refresh", "proxy")
def test_sa_id_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    check_id_token(ctx, proxied.ok("sa_idtoken")["token"], ctx.source)


# ================================================================ impersonated_credentials.Credentials


@row(AUTH, "impersonated_credentials.Credentials.refresh", "iam_endpoint_override")
def test_impersonated_refresh_override(ctx: Ctx) -> None:
    creds = impersonate(ctx, ctx.target, lifetime=900)
    creds.refresh(Request())
    assert creds.valid and creds.expiry is not None
    assert 800 < remaining(creds.expiry) <= 900
    assert_bearer(ctx, creds.token, ctx.target)


@row(AUTH, "impersonated_credentials.Credentials.refresh", "proxy")
def test_impersonated_refresh_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("imp_refresh")
    assert_bearer(ctx, out["token"], ctx.target)
    assert 500 < remaining(dt.datetime.fromisoformat(out["expiry"])) <= 600


@row(AUTH, "impersonated_credentials.Credentials.refresh, no role on target (PERMISSION_DENIED)",
     "iam_endpoint_override")
def test_impersonated_refresh_denied_override(ctx: Ctx) -> None:
    with pytest.raises(auth_exceptions.RefreshError) as caught:
        impersonate(ctx, ctx.denied).refresh(Request())
    assert "Unable to acquire impersonated credentials" in str(caught.value)
    err = google_error(caught.value.args[1])
    assert GET_ACCESS_TOKEN in err["message"]


@row(AUTH, "impersonated_credentials.Credentials.refresh, no role on target (PERMISSION_DENIED)", "proxy")
def test_impersonated_refresh_denied_proxy(proxied: Steps) -> None:
    r = proxied.failed("imp_refresh_denied")
    assert r["type"] == "google.auth.exceptions.RefreshError"
    assert "Unable to acquire impersonated credentials" in r["error"]
    assert GET_ACCESS_TOKEN in google_error(r["detail"][1])["message"]


@row(AUTH, "impersonated_credentials.Credentials(subject=...).refresh (domain-wide delegation refused)", "proxy")
def test_impersonated_subject_dwd_refused_proxy(proxied: Steps) -> None:
    # signJwt succeeds, then the JWT-bearer grant with sub != iss is refused as Google refuses an unauthorized
    # client: google-auth raises RefreshError("unauthorized_client: ...").
    r = proxied.failed("imp_dwd")
    assert r["type"] == "google.auth.exceptions.RefreshError", r
    assert r["detail"][0].startswith("unauthorized_client: "), r


@row(AUTH, "impersonated_credentials.Credentials.sign_bytes", "proxy")
def test_impersonated_sign_bytes_proxy(ctx: Ctx, proxied: Steps) -> None:
    signature = base64.b64decode(proxied.ok("imp_sign_bytes")["signature"])
    verify_signature(ctx, ctx.target, MESSAGE.encode(), signature)


@row(AUTH, "impersonated_credentials.Credentials.sign_bytes, no role on target (PERMISSION_DENIED)", "proxy")
def test_impersonated_sign_bytes_denied_proxy(proxied: Steps) -> None:
    r = proxied.failed("imp_sign_bytes_denied")
    assert r["type"] == "google.auth.exceptions.TransportError", r
    assert "Error calling sign_bytes" in r["error"]
    assert "iam.serviceAccounts.signBlob" in google_error(r["error"])["message"]


@row(AUTH, "impersonated_credentials.IDTokenCredentials.refresh", "proxy")
def test_impersonated_id_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    check_id_token(ctx, proxied.ok("imp_idtoken")["token"], ctx.target)


@row(AUTH, "impersonated_credentials.IDTokenCredentials.refresh, no role on target (PERMISSION_DENIED)", "proxy")
def test_impersonated_id_token_denied_proxy(proxied: Steps) -> None:
    r = proxied.failed("imp_idtoken_denied")
    assert r["type"] == "google.auth.exceptions.RefreshError", r
    assert "Error getting ID token" in r["error"]
    assert "iam.serviceAccounts.getOpenIdToken" in google_error(r["error"])["message"]


# ================================================================ google.auth.iam.Signer


@row(AUTH, "google.auth.iam.Signer.sign", "proxy")
def test_iam_signer_proxy(ctx: Ctx, proxied: Steps) -> None:
    signature = base64.b64decode(proxied.ok("iam_signer")["signature"])
    verify_signature(ctx, ctx.target, MESSAGE.encode(), signature)


@row(AUTH, "google.auth.iam.Signer.sign, no role on target (PERMISSION_DENIED)", "proxy")
def test_iam_signer_denied_proxy(proxied: Steps) -> None:
    r = proxied.failed("iam_signer_denied")
    assert r["type"] == "google.auth.exceptions.TransportError", r
    assert "iam.serviceAccounts.signBlob" in google_error(r["error"])["message"]


# ================================================================ Regional Access Boundary lookup


@row(REQUESTS, "GET iamcredentials allowedLocations (the RAB lookup URL)", "proxy")
def test_allowed_locations_requests_proxy(proxied: Steps) -> None:
    out = proxied.ok("rab_requests")
    assert out["status"] == 200, out
    assert out["content_type"].startswith("application/json")
    assert out["body"] == {"locations": [], "encodedLocations": "0x0"}


@row(AUTH, "background RAB lookup (service_account.Credentials)", "proxy")
def test_rab_background_service_account_proxy(proxied: Steps) -> None:
    out = proxied.ok("rab_sa")
    assert (out["first"], out["second"], out["alive"]) == (200, 200, False), out
    # The library took keyless's answer and now sends it on API calls.
    assert out["encoded"] == "0x0" and out["header"] == "0x0", out


@row(AUTH, "background RAB lookup (impersonated_credentials.Credentials)", "proxy")
def test_rab_background_impersonated_proxy(proxied: Steps) -> None:
    out = proxied.ok("rab_imp")
    assert (out["first"], out["second"], out["alive"]) == (200, 200, False), out
    assert out["encoded"] == "0x0" and out["header"] == "0x0", out


@row(AUTH, "background RAB lookup (compute_engine.Credentials)", "GCE_METADATA_HOST + proxy")
def test_rab_background_compute_engine_proxy(gce_proxied: Steps) -> None:
    out = gce_proxied.ok("rab_gce")
    assert (out["first"], out["second"], out["alive"]) == (200, 200, False), out
    assert out["encoded"] == "0x0" and out["header"] == "0x0", out


# ================================================================ google.auth.default()


@row(AUTH, "google.auth.default() with GOOGLE_APPLICATION_CREDENTIALS=service_account", "token_uri")
def test_adc_service_account_token_uri(ctx: Ctx, adc_sa: Steps) -> None:
    out = adc_sa.ok("default")
    assert out["type"] == "google.oauth2.service_account.Credentials"
    assert (out["project"], out["email"]) == (PROJECT, ctx.source)
    assert_bearer(ctx, out["token"], ctx.source)


@row(AUTH, "google.auth.default() with GOOGLE_APPLICATION_CREDENTIALS=service_account", "proxy")
def test_adc_service_account_proxy(ctx: Ctx, adc_sa_proxied: Steps) -> None:
    out = adc_sa_proxied.ok("default")
    assert out["type"] == "google.oauth2.service_account.Credentials"
    assert out["email"] == ctx.source
    assert_bearer(ctx, out["token"], ctx.source)


@row(AUTH, "google.auth.default() with GOOGLE_APPLICATION_CREDENTIALS=impersonated_service_account "
     "(keyless adc impersonate)", "proxy")
def test_adc_impersonated_proxy(ctx: Ctx, adc_imp: Steps) -> None:
    out = adc_imp.ok("default")
    assert out["type"] == "google.auth.impersonated_credentials.Credentials"
    assert out["email"] == ctx.target
    assert_bearer(ctx, out["token"], ctx.target)


@row(AUTH, "google.auth.default() impersonated_service_account file, no role on target (PERMISSION_DENIED)",
     "proxy")
def test_adc_impersonated_denied_proxy(adc_imp: Steps) -> None:
    r = adc_imp.failed("default_denied")
    assert r["type"] == "google.auth.exceptions.RefreshError", r
    assert GET_ACCESS_TOKEN in google_error(r["detail"][1])["message"]


@row(AUTH, "google.auth.default() with GOOGLE_APPLICATION_CREDENTIALS=authorized_user (owner.json)", "proxy")
def test_adc_authorized_user_proxy(ctx: Ctx, adc_user: Steps) -> None:
    out = adc_user.ok("default")
    assert out["type"] == "google.oauth2.credentials.Credentials"
    assert_bearer(ctx, out["token"], OWNER_EMAIL)


@row(AUTH, "google.oauth2.credentials.Credentials (authorized_user file).with_token_uri().refresh",
     "with_token_uri")
def test_authorized_user_with_token_uri(ctx: Ctx) -> None:
    creds = owner_creds(ctx)
    assert creds.token_uri == f"{ctx.url}/token"
    creds.refresh(Request())
    assert creds.valid
    assert_bearer(ctx, creds.token, OWNER_EMAIL)


# ================================================================ GCE metadata server


@row(AUTH, "google.auth.default() on GCE (compute_engine.Credentials, project id)",
     "GCE_METADATA_HOST + GCE_METADATA_IP")
def test_adc_gce(ctx: Ctx, gce: Steps) -> None:
    env = gce.ok("env")
    assert env["HTTPS_PROXY"] is None and env["GOOGLE_APPLICATION_CREDENTIALS"] is None, env
    assert env["NO_GCE_CHECK"] is None, env  # detection really pings the metadata server
    assert env["GCE_METADATA_HOST"] == env["GCE_METADATA_IP"] == ctx.compat.env["GCE_METADATA_HOST"]
    out = gce.ok("default")
    assert out["type"] == "google.auth.compute_engine.credentials.Credentials"
    assert out["project"] == PROJECT  # from /computeMetadata/v1/project/project-id: no GOOGLE_CLOUD_PROJECT here
    assert out["email"] == ctx.attached
    assert_bearer(ctx, out["token"], ctx.attached)


@row(AUTH, "compute_engine.Credentials.refresh (token, service_account_email)",
     "GCE_METADATA_HOST + GCE_METADATA_IP")
def test_compute_engine_credentials(ctx: Ctx, gce: Steps) -> None:
    out = gce.ok("compute")
    assert out["email"] == ctx.attached
    assert 3000 < remaining(dt.datetime.fromisoformat(out["expiry"])) <= 3600
    assert_bearer(ctx, out["token"], ctx.attached)


@row(AUTH, "compute_engine.IDTokenCredentials(use_metadata_identity_endpoint=True).refresh",
     "GCE_METADATA_HOST + GCE_METADATA_IP")
def test_compute_engine_id_token_metadata(ctx: Ctx, gce: Steps) -> None:
    claims = check_id_token(ctx, gce.ok("id_mds")["token"], ctx.attached)
    assert claims["google"]["compute_engine"]["project_id"] == PROJECT, claims  # format=full


@row(AUTH, "compute_engine.IDTokenCredentials().refresh (metadata + signBlob + oauth2/v4/token)",
     "GCE_METADATA_HOST + proxy")
def test_compute_engine_id_token_signblob_proxy(ctx: Ctx, gce_proxied: Steps) -> None:
    check_id_token(ctx, gce_proxied.ok("id_default")["token"], ctx.attached)


@row(AUTH, "compute_engine.IDTokenCredentials(token_uri=...).refresh (metadata + signBlob + token_uri)",
     "GCE_METADATA_HOST + proxy (signBlob) + token_uri")
def test_compute_engine_id_token_signblob_token_uri(ctx: Ctx, gce_proxied: Steps) -> None:
    check_id_token(ctx, gce_proxied.ok("id_token_uri")["token"], ctx.attached)


# ================================================================ id_token.fetch_id_token


@row(AUTH, "id_token.fetch_id_token (GOOGLE_APPLICATION_CREDENTIALS=service_account)", "token_uri")
def test_fetch_id_token_service_account(ctx: Ctx, adc_sa: Steps) -> None:
    check_id_token(ctx, adc_sa.ok("fetch_id_token")["token"], ctx.source)


@row(AUTH, "id_token.fetch_id_token (GOOGLE_APPLICATION_CREDENTIALS=service_account)", "proxy")
def test_fetch_id_token_service_account_proxy(ctx: Ctx, adc_sa_proxied: Steps) -> None:
    check_id_token(ctx, adc_sa_proxied.ok("fetch_id_token")["token"], ctx.source)


@row(AUTH, "id_token.fetch_id_token (GOOGLE_APPLICATION_CREDENTIALS=impersonated_service_account)", "proxy")
def test_fetch_id_token_impersonated_proxy(ctx: Ctx, adc_imp: Steps) -> None:
    check_id_token(ctx, adc_imp.ok("fetch_id_token")["token"], ctx.target)


@row(AUTH, "id_token.fetch_id_token (impersonated_service_account file), no role on target (PERMISSION_DENIED)",
     "proxy")
def test_fetch_id_token_impersonated_denied_proxy(adc_imp: Steps) -> None:
    r = adc_imp.failed("fetch_id_token_denied")
    assert r["type"] == "google.auth.exceptions.RefreshError", r
    assert "PERMISSION_DENIED" in r["error"]


@row(AUTH, "id_token.fetch_id_token (on GCE: metadata identity)", "GCE_METADATA_HOST + GCE_METADATA_IP")
def test_fetch_id_token_gce(ctx: Ctx, gce: Steps) -> None:
    check_id_token(ctx, gce.ok("fetch_id_token")["token"], ctx.attached)


# ================================================================ id_token verification


@pytest.fixture(scope="module")
def sa_id_token(ctx: Ctx) -> str:
    creds = service_account.IDTokenCredentials.from_service_account_file(str(ctx.source_key),
                                                                         target_audience=AUDIENCE)
    creds.refresh(Request())
    return str(creds.token)


@row(AUTH, "id_token.verify_token(certs_url=/oauth2/v1/certs) (x509 map)", "certs_url")
def test_verify_token_x509_certs_url(ctx: Ctx, sa_id_token: str) -> None:
    claims = check_id_token(ctx, sa_id_token, ctx.source, certs="/oauth2/v1/certs")
    assert jwt_part(sa_id_token, 0)["kid"] in requests.get(f"{ctx.url}/oauth2/v1/certs", timeout=10).json()
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(sa_id_token, Request(), audience=AUDIENCE + "/other",
                              certs_url=f"{ctx.url}/oauth2/v1/certs")
    forged = sa_id_token.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"\0" * 256).decode().rstrip("=")
    with pytest.raises(ValueError):
        id_token.verify_token(forged, Request(), audience=AUDIENCE, certs_url=f"{ctx.url}/oauth2/v1/certs")
    assert claims["email"] == ctx.source


@row(AUTH, "id_token.verify_token(certs_url=/oauth2/v3/certs) (JWKS, PyJWT)", "certs_url")
def test_verify_token_jwks_certs_url(ctx: Ctx, sa_id_token: str) -> None:
    check_id_token(ctx, sa_id_token, ctx.source, certs="/oauth2/v3/certs")
    jwks = requests.get(f"{ctx.url}/oauth2/v3/certs", timeout=10).json()
    assert jwt_part(sa_id_token, 0)["kid"] in {k["kid"] for k in jwks["keys"]}
    with pytest.raises(jwt.InvalidAudienceError):  # the JWKS path verifies with PyJWT
        id_token.verify_token(sa_id_token, Request(), audience=AUDIENCE + "/other",
                              certs_url=f"{ctx.url}/oauth2/v3/certs")


@row(AUTH, "id_token.verify_oauth2_token (www.googleapis.com/oauth2/v1/certs)", "proxy")
def test_verify_oauth2_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    claims = proxied.ok("verify_oauth2_token")["claims"]
    assert claims["iss"] in ("https://accounts.google.com", "accounts.google.com")
    assert (claims["aud"], claims["sub"], claims["email"]) == (AUDIENCE, ctx.uids[ctx.source], ctx.source)
    r = proxied.failed("verify_oauth2_token_wrong_audience")
    assert r["type"] == "google.auth.exceptions.InvalidValue" and "wrong audience" in r["error"], r


# ================================================================ google-cloud-storage signed URLs


@row(STORAGE, "Blob.generate_signed_url(version=v4, service_account_email=, access_token=)", "proxy")
def test_storage_signed_url_access_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    verify_signed_url(ctx, proxied.ok("storage_token")["url"], ctx.target)


@row(STORAGE, "Blob.generate_signed_url(version=v4, credentials=impersonated)", "proxy")
def test_storage_signed_url_impersonated_proxy(ctx: Ctx, proxied: Steps) -> None:
    verify_signed_url(ctx, proxied.ok("storage_imp")["url"], ctx.target)


@row(STORAGE, "Blob.generate_signed_url(version=v4, access_token=), no role on account (PERMISSION_DENIED)",
     "proxy")
def test_storage_signed_url_denied_proxy(proxied: Steps) -> None:
    r = proxied.failed("storage_token_denied")
    assert r["type"] == "google.auth.exceptions.TransportError", r
    assert "Error calling the IAM signBytes API" in r["error"]
    assert "PERMISSION_DENIED" in r["error"]


# ================================================================ google-cloud-iam IAMCredentialsClient (REST)


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_access_token", "api_endpoint")
def test_gapic_generate_access_token(ctx: Ctx) -> None:
    from google.protobuf import duration_pb2

    resp = gapic_client(ctx, owner_creds(ctx)).generate_access_token(
        name=ctx.resource(ctx.target), scope=[CLOUD], lifetime=duration_pb2.Duration(seconds=600))
    assert_bearer(ctx, resp.access_token, ctx.target)
    left = (resp.expire_time - dt.datetime.now(dt.UTC)).total_seconds()
    assert 500 < left <= 600


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_id_token", "api_endpoint")
def test_gapic_generate_id_token(ctx: Ctx) -> None:
    resp = gapic_client(ctx, owner_creds(ctx)).generate_id_token(name=ctx.resource(ctx.target), audience=AUDIENCE,
                                                                include_email=True)
    check_id_token(ctx, resp.token, ctx.target)


@row(GAPIC, "IAMCredentialsClient(transport=rest).sign_blob", "api_endpoint")
def test_gapic_sign_blob(ctx: Ctx) -> None:
    resp = gapic_client(ctx, owner_creds(ctx)).sign_blob(name=ctx.resource(ctx.target), payload=MESSAGE.encode())
    assert verify_signature(ctx, ctx.target, MESSAGE.encode(), resp.signed_blob, resp.key_id) == resp.key_id


@row(GAPIC, "IAMCredentialsClient(transport=rest).sign_jwt", "api_endpoint")
def test_gapic_sign_jwt(ctx: Ctx) -> None:
    payload = signed_jwt_payload(ctx, compat="api_endpoint")
    resp = gapic_client(ctx, owner_creds(ctx)).sign_jwt(name=ctx.resource(ctx.target), payload=payload)
    check_signed_jwt(ctx, resp.signed_jwt, resp.key_id, payload)


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_access_token, no role on target (PERMISSION_DENIED)",
     "api_endpoint")
def test_gapic_denied(ctx: Ctx) -> None:
    from google.api_core import exceptions as core_exceptions

    with pytest.raises(core_exceptions.Forbidden) as caught:
        gapic_client(ctx, owner_creds(ctx)).generate_access_token(name=ctx.resource(ctx.denied), scope=[CLOUD])
    assert caught.value.code == 403
    assert caught.value.reason == "IAM_PERMISSION_DENIED"
    assert GET_ACCESS_TOKEN in google_error(caught.value.response.text)["message"]


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_access_token", "proxy")
def test_gapic_generate_access_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("gapic_generate_access_token")
    assert_bearer(ctx, out["token"], ctx.target)
    assert 500 < (dt.datetime.fromisoformat(out["expire"]) - dt.datetime.now(dt.UTC)).total_seconds() <= 600


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_id_token", "proxy")
def test_gapic_generate_id_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    check_id_token(ctx, proxied.ok("gapic_generate_id_token")["token"], ctx.target)


@row(GAPIC, "IAMCredentialsClient(transport=rest).sign_blob", "proxy")
def test_gapic_sign_blob_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("gapic_sign_blob")
    verify_signature(ctx, ctx.target, MESSAGE.encode(), base64.b64decode(out["signature"]), out["key_id"])


@row(GAPIC, "IAMCredentialsClient(transport=rest).sign_jwt", "proxy")
def test_gapic_sign_jwt_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("gapic_sign_jwt")
    claims = jwt_part(out["jwt"], 1)
    assert claims["compat"] == "proxy"
    check_signed_jwt(ctx, out["jwt"], out["key_id"], json.dumps(claims))


@row(GAPIC, "IAMCredentialsClient(transport=rest).generate_access_token, no role on target (PERMISSION_DENIED)",
     "proxy")
def test_gapic_denied_proxy(proxied: Steps) -> None:
    out = proxied.ok("gapic_denied")
    assert out["type"] == "google.api_core.exceptions.Forbidden" and out["code"] == 403, out
    assert out["reason"] == "IAM_PERMISSION_DENIED"
    assert GET_ACCESS_TOKEN in google_error(out["body"])["message"]


@row(GAPIC, "iam_admin_v1.IAMClient(transport=rest): the library ships no REST transport",
     "none: its default gRPC transport works (--grpc-port, rows of test_grpc_admin)")
def test_gapic_iam_admin_is_grpc_only() -> None:
    # The admin client ships no REST transport (KeyError: 'rest'); on its default transport, gRPC, it is served
    # by keyless serve --grpc-port (tests/compat/test_grpc_admin.py). IAM v1 admin calls over REST work through
    # googleapiclient (rows below).
    from google.cloud import iam_admin_v1

    with pytest.raises(KeyError, match="rest"):
        iam_admin_v1.IAMClient(transport="rest", credentials=AnonymousCredentials())


# ================================================================ googleapiclient discovery clients


@pytest.fixture(scope="module")
def disc_iamcredentials(ctx: Ctx) -> Any:
    return discovery(ctx, "iamcredentials", owner_creds(ctx)).projects().serviceAccounts()


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateAccessToken", "api_endpoint")
def test_discovery_generate_access_token(ctx: Ctx, disc_iamcredentials: Any) -> None:
    resp = disc_iamcredentials.generateAccessToken(name=ctx.resource(ctx.target),
                                                   body={"scope": [CLOUD], "lifetime": "600s"}).execute()
    assert_bearer(ctx, resp["accessToken"], ctx.target)
    assert resp["expireTime"].endswith("Z") and "." not in resp["expireTime"]


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateIdToken", "api_endpoint")
def test_discovery_generate_id_token(ctx: Ctx, disc_iamcredentials: Any) -> None:
    resp = disc_iamcredentials.generateIdToken(name=ctx.resource(ctx.target),
                                               body={"audience": AUDIENCE, "includeEmail": True}).execute()
    check_id_token(ctx, resp["token"], ctx.target)


@row(DISCOVERY, "discovery.build(iamcredentials, v1) signBlob", "api_endpoint")
def test_discovery_sign_blob(ctx: Ctx, disc_iamcredentials: Any) -> None:
    resp = disc_iamcredentials.signBlob(name=ctx.resource(ctx.target),
                                        body={"payload": base64.b64encode(MESSAGE.encode()).decode()}).execute()
    verify_signature(ctx, ctx.target, MESSAGE.encode(), base64.b64decode(resp["signedBlob"]), resp["keyId"])


@row(DISCOVERY, "discovery.build(iamcredentials, v1) signJwt", "api_endpoint")
def test_discovery_sign_jwt(ctx: Ctx, disc_iamcredentials: Any) -> None:
    payload = signed_jwt_payload(ctx)
    resp = disc_iamcredentials.signJwt(name=ctx.resource(ctx.target), body={"payload": payload}).execute()
    check_signed_jwt(ctx, resp["signedJwt"], resp["keyId"], payload)


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateAccessToken, no role on target (PERMISSION_DENIED)",
     "api_endpoint")
def test_discovery_denied(ctx: Ctx, disc_iamcredentials: Any) -> None:
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as caught:
        disc_iamcredentials.generateAccessToken(name=ctx.resource(ctx.denied), body={"scope": [CLOUD]}).execute()
    assert caught.value.status_code == 403
    assert GET_ACCESS_TOKEN in caught.value.reason
    google_error(caught.value.content)


@row(DISCOVERY, "discovery.build(iam, v1) projects.serviceAccounts.get/list", "api_endpoint")
def test_discovery_iam_v1(ctx: Ctx) -> None:
    sas = discovery(ctx, "iam", owner_creds(ctx)).projects().serviceAccounts()
    got = sas.get(name=f"projects/{PROJECT}/serviceAccounts/{ctx.target}").execute()
    assert (got["email"], got["uniqueId"], got["projectId"]) == (ctx.target, ctx.uids[ctx.target], PROJECT)
    listed = sas.list(name=f"projects/{PROJECT}", pageSize=100).execute()
    emails = {a["email"] for a in listed["accounts"]}
    assert {ctx.target, ctx.source, ctx.attached, ctx.denied} <= emails


# Through the proxy, googleapiclient goes over httplib2, which honours HTTPS_PROXY only when PySocks is installed
# (a test dependency) and trusts only ``HTTPLIB2_CA_CERTS``, which ``keyless env`` prints.


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateAccessToken", "proxy")
def test_discovery_generate_access_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("disc_generate_access_token")
    assert_bearer(ctx, out["token"], ctx.target)


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateIdToken", "proxy")
def test_discovery_generate_id_token_proxy(ctx: Ctx, proxied: Steps) -> None:
    check_id_token(ctx, proxied.ok("disc_generate_id_token")["token"], ctx.target)


@row(DISCOVERY, "discovery.build(iamcredentials, v1) signBlob", "proxy")
def test_discovery_sign_blob_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("disc_sign_blob")
    verify_signature(ctx, ctx.target, MESSAGE.encode(), base64.b64decode(out["signature"]), out["key_id"])


@row(DISCOVERY, "discovery.build(iamcredentials, v1) signJwt", "proxy")
def test_discovery_sign_jwt_proxy(ctx: Ctx, proxied: Steps) -> None:
    out = proxied.ok("disc_sign_jwt")
    check_signed_jwt(ctx, out["jwt"], out["key_id"], json.dumps(jwt_part(out["jwt"], 1)))


@row(DISCOVERY, "discovery.build(iamcredentials, v1) generateAccessToken, no role on target (PERMISSION_DENIED)",
     "proxy")
def test_discovery_denied_proxy(proxied: Steps) -> None:
    out = proxied.ok("disc_denied")
    assert out["status"] == 403, out
    assert GET_ACCESS_TOKEN in out["reason"]
    google_error(out["body"])


@row(DISCOVERY, "discovery.build(iam, v1) projects.serviceAccounts.get/list", "proxy")
def test_discovery_iam_v1_proxy(ctx: Ctx, proxied: Steps) -> None:
    got = proxied.ok("disc_iam_get")
    assert (got["email"], got["uniqueId"]) == (ctx.target, ctx.uids[ctx.target])
    emails = {a["email"] for a in proxied.ok("disc_iam_list")["accounts"]}
    assert {ctx.target, ctx.source, ctx.attached, ctx.denied} <= emails
