"""google-cloud-iam's ``IAMCredentialsClient()`` exactly as an application writes it (no ``client_options``, its
default gRPC transport, Google's endpoint ``iamcredentials.googleapis.com:443``) in the environment that
``keyless env`` prints: grpc core takes the proxy from ``https_proxy`` and its roots from
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``; the interception proxy negotiates HTTP/2 with it and relays the stream to
keyless's gRPC listener, which ``keyless serve`` starts with the proxy. The same proxy still answers REST
(HTTP/1.1) for the same host.

Each scenario is one fresh interpreter (grpc and google-auth read their environment at import) that runs named
steps and prints their results; tokens are checked against keyless's tokeninfo, and the audit entries show which
wire each call came over (grpc-python's user agent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import pytest
import requests

from tests.compat.conftest import CompatEnv
from tests.conftest import CLOUD, KEYLESS

GAPIC = f"google-cloud-iam {version('google-cloud-iam')}"
ROUTE = "proxy (gRPC: h2 relayed to the gRPC listener)"
REST_ROUTE = "proxy (REST: HTTP/1.1, the same host)"
OWNER = "owner@keyless.local"
GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"
AUDIENCE = "https://grpc-proxy.keyless.test"


def row(call: str, route: str = ROUTE) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.1", client=GAPIC, call=call, route=route)


@dataclass
class Ctx:
    compat: CompatEnv
    target: str  # the owner, the hop and the key file's account hold Token Creator on it
    hop: str  # the owner holds Token Creator on it: the owner -> hop -> target chain
    denied: str  # nobody holds a role on it

    def name(self, email: str) -> str:
        return f"projects/-/serviceAccounts/{email}"


@pytest.fixture(scope="module")
def ctx(compat: CompatEnv) -> Ctx:
    srv = compat.server
    target, hop, denied = (srv.create_sa(f"grpc-proxy-{role}") for role in ("target", "hop", "denied"))
    for member in (f"user:{OWNER}", f"serviceAccount:{hop}", f"serviceAccount:{compat.source}"):
        srv.grant(target, member)
    srv.grant(hop, f"user:{OWNER}")
    return Ctx(compat, target, hop, denied)


PRELUDE = r'''
import json, os, sys
CFG = json.loads(__CFG__)
STEPS = {}

def step(name, fn):
    try:
        STEPS[name] = {"ok": True, "value": fn()}
    except Exception as exc:
        STEPS[name] = {"ok": False, "type": type(exc).__name__, "error": str(exc)[:2000],
                       "reason": getattr(exc, "reason", None), "domain": getattr(exc, "domain", None),
                       "code": getattr(getattr(exc, "grpc_status_code", None), "name", None)}

from google.cloud import iam_credentials_v1
from google.protobuf import duration_pb2
CALL = {"timeout": 30, "retry": None}

def name(email):
    return f"projects/-/serviceAccounts/{email}"
'''

EPILOGUE = r'''
print("@@STEPS@@" + json.dumps(STEPS))
'''

OWNER_BODY = r'''
client = iam_credentials_v1.IAMCredentialsClient()  # what an application writes: no options at all
step("transport", lambda: {"transport": type(client.transport).__name__, "endpoint": client.api_endpoint})
step("access", lambda: client.generate_access_token(
    name=name(CFG["target"]), scope=[CFG["scope"]], lifetime=duration_pb2.Duration(seconds=900),
    **CALL).access_token)
step("chain", lambda: client.generate_access_token(
    name=name(CFG["target"]), scope=[CFG["scope"]], delegates=[name(CFG["hop"])], **CALL).access_token)
step("denied", lambda: client.generate_access_token(name=name(CFG["denied"]), scope=[CFG["scope"]], **CALL))
step("id_token", lambda: client.generate_id_token(
    name=name(CFG["target"]), audience=CFG["audience"], include_email=True, **CALL).token)

def sign_blob():
    resp = client.sign_blob(name=name(CFG["target"]), payload=b"through the proxy", **CALL)
    return {"keyId": resp.key_id, "signedBlob": resp.signed_blob.hex()}
step("sign_blob", sign_blob)

from google.cloud import iam_admin_v1, resourcemanager_v3

admin = iam_admin_v1.IAMClient()  # iam.googleapis.com:443, gRPC only
step("admin", lambda: admin.get_service_account(name=name(CFG["target"]), **CALL).email)
projects = resourcemanager_v3.ProjectsClient()  # cloudresourcemanager.googleapis.com:443
step("project", lambda: projects.get_project(name=f"projects/{CFG['project']}", **CALL).project_id)

rest = iam_credentials_v1.IAMCredentialsClient(transport="rest")  # the same proxy, HTTP/1.1
step("rest", lambda: rest.generate_access_token(name=name(CFG["target"]), scope=[CFG["scope"]],
                                                lifetime=duration_pb2.Duration(seconds=1200),
                                                timeout=30).access_token)
'''

KEY_FILE_BODY = r'''
client = iam_credentials_v1.IAMCredentialsClient()
step("access", lambda: client.generate_access_token(
    name=name(CFG["target"]), scope=[CFG["scope"]], **CALL).access_token)
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


def scenario(ctx: Ctx, body: str, credentials: str) -> Steps:
    cfg = {"target": ctx.target, "hop": ctx.hop, "denied": ctx.denied, "scope": CLOUD, "audience": AUDIENCE,
           "project": ctx.compat.server.project}
    code = PRELUDE.replace("__CFG__", repr(json.dumps(cfg))) + body + EPILOGUE
    proc = ctx.compat.run_python(code, extra_env={"GOOGLE_APPLICATION_CREDENTIALS": credentials}, timeout=200)
    assert proc.returncode == 0 and "@@STEPS@@" in proc.stdout, f"scenario crashed:\n{proc.stdout}\n{proc.stderr}"
    return Steps(json.loads(proc.stdout.rsplit("@@STEPS@@", 1)[1]))


@pytest.fixture(scope="module")
def owner_steps(ctx: Ctx) -> Steps:
    """ADC: the owner's authorized_user file (refreshed at its token_uri, keyless on loopback)."""
    return scenario(ctx, OWNER_BODY, str(ctx.compat.server.owner_file))


@pytest.fixture(scope="module")
def key_file_steps(ctx: Ctx) -> Steps:
    """ADC: a service-account key file (the GAPIC client signs its own JWT for the gRPC calls), in a shell that
    had other gRPC proxy settings before ``eval "$(keyless env)"``: grpc core reads ``grpc_proxy`` and
    ``no_grpc_proxy`` before ``https_proxy`` and ``no_proxy``."""
    import os
    import subprocess
    import sys

    cfg = {"target": ctx.target, "hop": ctx.hop, "denied": ctx.denied, "scope": CLOUD, "audience": AUDIENCE}
    code = PRELUDE.replace("__CFG__", repr(json.dumps(cfg))) + KEY_FILE_BODY + EPILOGUE
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "GCE_", "KEYLESS_")) and "proxy" not in k.lower()}
    env.update({"grpc_proxy": "http://127.0.0.1:9", "no_grpc_proxy": "localhost", "SCENARIO": code,
                "KEYLESS_DATA_DIR": str(ctx.compat.server.data_dir), "KEY_FILE": str(ctx.compat.source_key)})
    keyless = " ".join(KEYLESS)
    script = (f'eval "$({keyless} env)"; export GOOGLE_APPLICATION_CREDENTIALS="$KEY_FILE"; '
              f'{sys.executable} -c "$SCENARIO"')
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
                          timeout=200, cwd=ctx.compat.workdir)
    assert proc.returncode == 0 and "@@STEPS@@" in proc.stdout, f"scenario crashed:\n{proc.stdout}\n{proc.stderr}"
    return Steps(json.loads(proc.stdout.rsplit("@@STEPS@@", 1)[1]))


def tokeninfo(ctx: Ctx, token: str) -> dict[str, Any]:
    r = requests.get(f"{ctx.compat.server.url}/oauth2/v3/tokeninfo", params={"access_token": token}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def audit_entry(ctx: Ctx, method: str, **request: Any) -> dict[str, Any]:
    """The last audit entry of ``method`` whose request has these fields."""
    entries = ctx.compat.server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    found = [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"] == method
             and all(e["protoPayload"]["request"].get(k) == v for k, v in request.items())]
    assert found, f"no {method} entry with {request}"
    return dict(found[-1])


def assert_over_grpc(entry: dict[str, Any]) -> None:
    agent = entry["requestMetadata"]["callerSuppliedUserAgent"]
    assert "grpc-python" in agent, agent


def test_the_client_keeps_its_default_transport_and_endpoint(owner_steps: Steps) -> None:
    assert owner_steps.ok("transport") == {"transport": "IAMCredentialsGrpcTransport",
                                           "endpoint": "iamcredentials.googleapis.com"}


@row("IAMCredentialsClient().generate_access_token (ADC: authorized_user)")
def test_generate_access_token_with_the_owner_adc(ctx: Ctx, owner_steps: Steps) -> None:
    info = tokeninfo(ctx, owner_steps.ok("access"))
    assert info["email"] == ctx.target and CLOUD in info["scope"].split()
    entry = audit_entry(ctx, "GenerateAccessToken", name=ctx.name(ctx.target), lifetime="900s")
    assert entry["authenticationInfo"]["principalEmail"] == OWNER
    assert_over_grpc(entry)


@row("IAMCredentialsClient().generate_access_token (ADC: service-account key file)")
def test_generate_access_token_with_a_key_file(ctx: Ctx, key_file_steps: Steps) -> None:
    assert tokeninfo(ctx, key_file_steps.ok("access"))["email"] == ctx.target
    entries = ctx.compat.server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    mine = [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"] == "GenerateAccessToken"
            and e["protoPayload"]["authenticationInfo"]["principalEmail"] == ctx.compat.source
            and e["protoPayload"]["request"]["name"] == ctx.name(ctx.target)]
    assert mine and "grpc-python" in mine[-1]["requestMetadata"]["callerSuppliedUserAgent"]


@row("IAMCredentialsClient().generate_access_token with delegates")
def test_a_delegation_chain(ctx: Ctx, owner_steps: Steps) -> None:
    assert tokeninfo(ctx, owner_steps.ok("chain"))["email"] == ctx.target
    entry = audit_entry(ctx, "GenerateAccessToken", delegates=[ctx.name(ctx.hop)])
    assert entry["authenticationInfo"]["serviceAccountDelegationInfo"] == [
        {"firstPartyPrincipal": {"principalEmail": ctx.hop}}]
    assert [a["permission"] for a in entry["authorizationInfo"]] == [
        "iam.serviceAccounts.implicitDelegation", GET_ACCESS_TOKEN]
    assert_over_grpc(entry)


@row("IAMCredentialsClient() denial: PERMISSION_DENIED")
def test_a_denial(ctx: Ctx, owner_steps: Steps) -> None:
    failed = owner_steps.failed("denied")
    assert failed["type"] == "PermissionDenied" and failed["code"] == "PERMISSION_DENIED", failed
    assert failed["reason"] == "IAM_PERMISSION_DENIED" and failed["domain"] == "iam.googleapis.com"
    assert GET_ACCESS_TOKEN in failed["error"]
    entry = audit_entry(ctx, "GenerateAccessToken", name=ctx.name(ctx.denied))
    assert entry["status"]["code"] == 7 and entry["authorizationInfo"][-1]["granted"] is False
    assert_over_grpc(entry)


@row("IAMCredentialsClient().generate_id_token, sign_blob")
def test_id_token_and_sign_blob(ctx: Ctx, owner_steps: Steps) -> None:
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    claims = id_token.verify_token(owner_steps.ok("id_token"), Request(), audience=AUDIENCE,
                                   certs_url=f"{ctx.compat.server.url}/oauth2/v1/certs")
    assert claims["email"] == ctx.target
    signed = owner_steps.ok("sign_blob")
    assert signed["keyId"] and signed["signedBlob"]
    assert_over_grpc(audit_entry(ctx, "SignBlob", name=ctx.name(ctx.target)))


@pytest.mark.compat(section="2.1", client=GAPIC, call="iam_admin_v1.IAMClient().get_service_account", route=ROUTE)
def test_the_admin_client_through_the_proxy(ctx: Ctx, owner_steps: Steps) -> None:
    assert owner_steps.ok("admin") == ctx.target


@pytest.mark.compat(section="2.1", client=f"google-cloud-resource-manager {version('google-cloud-resource-manager')}",
                    call="ProjectsClient().get_project", route=ROUTE)
def test_the_projects_client_through_the_proxy(ctx: Ctx, owner_steps: Steps) -> None:
    assert owner_steps.ok("project") == ctx.compat.server.project


@row("IAMCredentialsClient(transport='rest').generate_access_token", REST_ROUTE)
def test_rest_through_the_same_proxy(ctx: Ctx, owner_steps: Steps) -> None:
    assert tokeninfo(ctx, owner_steps.ok("rest"))["email"] == ctx.target
    agent = audit_entry(ctx, "GenerateAccessToken", lifetime="1200s")["requestMetadata"]["callerSuppliedUserAgent"]
    assert "grpc-python" not in agent, agent


def test_keyless_env_sets_and_unsets_what_grpc_reads(ctx: Ctx) -> None:
    import subprocess

    env, srv = ctx.compat.env, ctx.compat.server
    endpoints = json.loads((srv.data_dir / "endpoints.json").read_text())
    assert env["grpc_proxy"] == env["https_proxy"] == endpoints["proxy"]
    assert env["no_grpc_proxy"] == env["no_proxy"]
    assert env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] == endpoints["caBundle"]
    # The listener the proxy relays to (started with the proxy, on loopback), for direct use too.
    assert env["KEYLESS_GRPC_ENDPOINT"] == endpoints["grpc"] and endpoints["grpc"].startswith("127.0.0.1:")
    unset = subprocess.run([*KEYLESS, "--data-dir", str(srv.data_dir), "env", "--unset"], capture_output=True,
                           text=True, check=True, timeout=60).stdout.split()
    for name in ("grpc_proxy", "no_grpc_proxy", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "KEYLESS_GRPC_ENDPOINT"):
        assert name in unset, name
