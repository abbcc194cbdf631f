"""google-cloud-iam's ``IAMCredentialsClient`` on its default transport, gRPC, against ``keyless serve --grpc-port``.

The client is the unmodified library: its gRPC transport over a channel to the listener, an insecure channel as
Google documents for emulators (the caller's access token in the ``authorization`` metadata of each call), or a
channel carrying google-auth credentials (``grpc.local_channel_credentials``: call credentials over plaintext on
loopback) that refresh at keyless's ``/token``. Tokens are used as bearers over REST, ID tokens and signatures are
verified with the keys keyless publishes, errors are read from the status details keyless sends, and each call's
audit entry is read back over REST as the owner.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from google.api_core import exceptions as api_exceptions
from google.auth.transport.grpc import AuthMetadataPlugin
from google.auth.transport.requests import Request
from google.cloud import iam_credentials_v1
from google.cloud.iam_credentials_v1.services.iam_credentials.transports import IAMCredentialsGrpcTransport
from google.oauth2 import credentials as user_credentials
from google.oauth2 import id_token, service_account
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.compat.grpc_support import CALL, Authorized
from tests.conftest import CLOUD, KEYLESS, Server, start_server

GAPIC = f"google-cloud-iam {version('google-cloud-iam')}"
DIRECT = "api_endpoint: --grpc-port, insecure channel"
SERVICE = "google.iam.credentials.v1.IAMCredentials"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
AUDIENCE = "https://grpc.keyless.test/audience"
OWNER_EMAIL = "owner@keyless.local"
GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"


def row(call: str, route: str = DIRECT) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.1", client=GAPIC, call=call, route=route)


@dataclass
class Ctx:
    server: Server
    endpoint: str  # host:port of the gRPC listener
    caller: str  # holds Token Creator on target and delegate
    caller_token: str
    target: str
    delegate: str  # holds Token Creator on target; the caller on it
    denied: str  # nobody holds a role on it

    def name(self, email: str) -> str:
        return f"projects/-/serviceAccounts/{email}"

    def client(self, token: str | None = None) -> Any:
        """The client over an insecure channel; ``token`` (default: the caller's) goes with every call."""
        channel = grpc.insecure_channel(self.endpoint)
        return Authorized(iam_credentials_v1.IAMCredentialsClient(
            transport=IAMCredentialsGrpcTransport(channel=channel)), token or self.caller_token)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    base = tmp_path_factory.mktemp("grpc")
    srv = start_server(base / "data", "--grpc-port", "0", "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        endpoint = json.loads((srv.data_dir / "endpoints.json").read_text())["grpc"]
        caller, target, delegate, denied = (srv.create_sa(f"grpc-{role}") for role in
                                            ("caller", "target", "delegate", "denied"))
        srv.grant(target, f"serviceAccount:{caller}", TOKEN_CREATOR)
        srv.grant(target, f"serviceAccount:{delegate}", TOKEN_CREATOR)
        srv.grant(delegate, f"serviceAccount:{caller}", TOKEN_CREATOR)
        creds = service_account.Credentials.from_service_account_file(
            str(srv.key_file(caller, base / "caller.json")), scopes=[CLOUD])
        creds.refresh(Request())  # at the key file's token_uri: keyless
        yield Ctx(srv, endpoint, caller, str(creds.token), target, delegate, denied)
    finally:
        srv.stop()


# ---------------------------------------------------------------- checks against what keyless publishes


def assert_bearer(ctx: Ctx, token: str, email: str) -> None:
    """``token`` is a keyless access token for ``email`` that authenticates REST calls."""
    info = requests.get(f"{ctx.server.url}/oauth2/v3/tokeninfo", params={"access_token": token}, timeout=10).json()
    assert info["email"] == email, info
    assert CLOUD in info["scope"].split(), info
    r = requests.post(f"{ctx.server.url}/v1/projects/-/serviceAccounts/{ctx.target}:testIamPermissions",
                      json={"permissions": [GET_ACCESS_TOKEN]}, headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
    assert r.status_code == 200, r.text


def public_keys(ctx: Ctx, email: str) -> dict[str, Any]:
    r = requests.get(f"{ctx.server.url}/service_accounts/v1/metadata/x509/{email}", timeout=10)
    assert r.status_code == 200, r.text
    return {kid: x509.load_pem_x509_certificate(pem.encode()).public_key() for kid, pem in r.json().items()}


def audit_entries(ctx: Ctx, method: str) -> list[dict[str, Any]]:
    entries = ctx.server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    return [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"] == method]


def status_details(exc: api_exceptions.GoogleAPICallError) -> list[Any]:
    """The google.rpc detail messages of the ``grpc-status-details-bin`` trailer, read with grpc_status."""
    status = rpc_status.from_call(exc.response)
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == exc.grpc_status_code.value[0] and status.message == exc.message
    out = []
    for detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                    error_details_pb2.PreconditionFailure):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                out.append(message)
    return out


# ---------------------------------------------------------------- the four methods


@row("IAMCredentialsClient().generate_access_token")
def test_generate_access_token(ctx: Ctx) -> None:
    before = time.time()
    resp = ctx.client().generate_access_token(name=ctx.name(ctx.target), scope=[CLOUD],
                                              lifetime=duration_pb2.Duration(seconds=600))
    assert_bearer(ctx, resp.access_token, ctx.target)
    expires = resp.expire_time.timestamp()
    assert before + 600 - 5 <= expires <= time.time() + 600 + 5

    [entry] = audit_entries(ctx, "GenerateAccessToken")[-1:]
    assert entry["serviceName"] == "iamcredentials.googleapis.com"
    assert entry["authenticationInfo"]["principalEmail"] == ctx.caller
    assert entry["request"] == {"name": ctx.name(ctx.target), "scope": [CLOUD], "lifetime": "600s"}
    assert entry["requestMetadata"]["callerIp"] == "127.0.0.1"
    assert "grpc-python" in entry["requestMetadata"]["callerSuppliedUserAgent"]
    assert entry["resourceName"].startswith("projects/-/serviceAccounts/")
    assert set(entry["response"]) == {"tokenHash", "expireTime"}
    assert entry["status"] == {}


@row("IAMCredentialsClient().generate_id_token")
def test_generate_id_token_verifies_with_the_published_certs(ctx: Ctx) -> None:
    resp = ctx.client().generate_id_token(name=ctx.name(ctx.target), audience=AUDIENCE, include_email=True)
    claims = id_token.verify_token(resp.token, Request(), audience=AUDIENCE,
                                   certs_url=f"{ctx.server.url}/oauth2/v1/certs")
    assert claims["email"] == ctx.target and claims["email_verified"] is True
    assert claims["aud"] == AUDIENCE
    without = ctx.client().generate_id_token(name=ctx.name(ctx.target), audience=AUDIENCE)
    assert "email" not in id_token.verify_token(without.token, Request(), audience=AUDIENCE,
                                                certs_url=f"{ctx.server.url}/oauth2/v1/certs")
    [entry] = audit_entries(ctx, "GenerateIdToken")[-1:]
    assert entry["request"] == {"name": ctx.name(ctx.target), "audience": AUDIENCE}


@row("IAMCredentialsClient().sign_blob")
def test_sign_blob_verifies_with_the_published_key(ctx: Ctx) -> None:
    blob = secrets.token_bytes(64) + b"\x00\xff"  # bytes as they are: no base64 on this wire
    resp = ctx.client().sign_blob(name=ctx.name(ctx.target), payload=blob)
    key = public_keys(ctx, ctx.target)[resp.key_id]
    key.verify(resp.signed_blob, blob, padding.PKCS1v15(), hashes.SHA256())
    [entry] = audit_entries(ctx, "SignBlob")[-1:]
    assert entry["authenticationInfo"]["principalEmail"] == ctx.caller
    assert "payload" not in entry["request"]


@row("IAMCredentialsClient().sign_jwt")
def test_sign_jwt_verifies_with_its_kid(ctx: Ctx) -> None:
    now = int(time.time())
    claims = {"iss": ctx.target, "sub": ctx.target, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    resp = ctx.client().sign_jwt(name=ctx.name(ctx.target), payload=json.dumps(claims))
    assert jwt.get_unverified_header(resp.signed_jwt)["kid"] == resp.key_id
    key = public_keys(ctx, ctx.target)[resp.key_id]
    assert jwt.decode(resp.signed_jwt, key, algorithms=["RS256"], audience=AUDIENCE) == claims


@row("IAMCredentialsClient().generate_access_token with delegates")
def test_a_delegation_chain(ctx: Ctx) -> None:
    resp = ctx.client().generate_access_token(name=ctx.name(ctx.target), scope=[CLOUD],
                                              delegates=[ctx.name(ctx.delegate)])
    assert_bearer(ctx, resp.access_token, ctx.target)
    [entry] = audit_entries(ctx, "GenerateAccessToken")[-1:]
    assert entry["authenticationInfo"]["serviceAccountDelegationInfo"] == [
        {"firstPartyPrincipal": {"principalEmail": ctx.delegate}}]
    assert [a["permission"] for a in entry["authorizationInfo"]] == [
        "iam.serviceAccounts.implicitDelegation", GET_ACCESS_TOKEN]
    assert entry["request"]["delegates"] == [ctx.name(ctx.delegate)]


@row("IAMCredentialsClient() with google-auth credentials", "api_endpoint: --grpc-port, local channel credentials")
def test_google_auth_credentials_on_the_channel(ctx: Ctx) -> None:
    """The owner's authorized_user file, refreshed at keyless's /token by google-auth's gRPC metadata plugin."""
    creds = user_credentials.Credentials.from_authorized_user_file(
        str(ctx.server.owner_file), scopes=[CLOUD]).with_token_uri(f"{ctx.server.url}/token")
    channel = grpc.secure_channel(ctx.endpoint, grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.metadata_call_credentials(AuthMetadataPlugin(creds, Request()))))
    ctx.server.grant(ctx.target, f"user:{OWNER_EMAIL}", TOKEN_CREATOR)
    client = iam_credentials_v1.IAMCredentialsClient(transport=IAMCredentialsGrpcTransport(channel=channel))
    resp = client.generate_access_token(name=ctx.name(ctx.target), scope=[CLOUD], **CALL)
    assert_bearer(ctx, resp.access_token, ctx.target)
    assert audit_entries(ctx, "GenerateAccessToken")[-1]["authenticationInfo"]["principalEmail"] == OWNER_EMAIL


# ---------------------------------------------------------------- errors, as Google's front ends send them


@row("IAMCredentialsClient() denial: PERMISSION_DENIED")
def test_a_denial_carries_error_info(ctx: Ctx) -> None:
    with pytest.raises(api_exceptions.PermissionDenied) as raised:
        ctx.client().generate_access_token(name=ctx.name(ctx.denied), scope=[CLOUD])
    exc = raised.value
    assert exc.grpc_status_code == grpc.StatusCode.PERMISSION_DENIED
    assert GET_ACCESS_TOKEN in exc.message
    # google-api-core reads the details itself, and grpc_status reads the same trailer.
    assert exc.reason == "IAM_PERMISSION_DENIED" and exc.domain == "iam.googleapis.com"
    [info] = status_details(exc)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "IAM_PERMISSION_DENIED" and info.metadata["permission"] == GET_ACCESS_TOKEN

    [entry] = audit_entries(ctx, "GenerateAccessToken")[-1:]
    assert entry["status"]["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert entry["authorizationInfo"][-1]["granted"] is False
    assert entry["request"]["name"] == ctx.name(ctx.denied)


@row("IAMCredentialsClient() bad request: INVALID_ARGUMENT")
def test_a_bad_request_carries_bad_request(ctx: Ctx) -> None:
    with pytest.raises(api_exceptions.InvalidArgument) as raised:
        ctx.client().sign_blob(name=f"projects/some-project/serviceAccounts/{ctx.target}", payload=b"x")
    [bad] = status_details(raised.value)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "name"
    with pytest.raises(api_exceptions.InvalidArgument, match="lifetime") as raised:
        ctx.client().generate_access_token(name=ctx.name(ctx.target), scope=[CLOUD],
                                           lifetime=duration_pb2.Duration(seconds=-5))
    [bad] = status_details(raised.value)
    assert bad.field_violations[0].field == "lifetime"
    assert audit_entries(ctx, "GenerateAccessToken")[-1]["status"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_missing_or_forged_token_is_unauthenticated(ctx: Ctx) -> None:
    channel = grpc.insecure_channel(ctx.endpoint)
    client = iam_credentials_v1.IAMCredentialsClient(transport=IAMCredentialsGrpcTransport(channel=channel))
    with pytest.raises(api_exceptions.Unauthenticated) as raised:
        client.sign_blob(name=ctx.name(ctx.target), payload=b"x", **CALL)
    assert raised.value.reason == "CREDENTIALS_MISSING"
    with pytest.raises(api_exceptions.Unauthenticated):
        ctx.client("ya29.forged").sign_blob(name=ctx.name(ctx.target), payload=b"x")


def _raw_call(ctx: Ctx, method: str, message: bytes, *, token: bool = True) -> grpc.RpcError:
    """Bytes sent as the request of ``method``, as no client library would; the error it ends with."""
    with grpc.insecure_channel(ctx.endpoint) as channel:
        call = channel.unary_unary(f"/{SERVICE}/{method}")
        metadata = [("authorization", f"Bearer {ctx.caller_token}")] if token else []
        with pytest.raises(grpc.RpcError) as raised:
            call(message, metadata=metadata, timeout=20)
    return raised.value


def test_garbage_unknown_methods_and_oversized_messages_get_a_status(ctx: Ctx) -> None:
    garbage = _raw_call(ctx, "SignBlob", b"\xff\xff\xff\xff")
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf" in garbage.details()
    status = rpc_status.from_call(garbage)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # A string field that is not UTF-8 (field 1, name): a protobuf parse error too.
    assert _raw_call(ctx, "SignJwt", b"\x0a\x02\xc3\x28").code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _raw_call(ctx, "SignBlob", b"\xff", token=False).code() == grpc.StatusCode.UNAUTHENTICATED
    assert _raw_call(ctx, "NoSuchMethod", b"").code() == grpc.StatusCode.UNIMPLEMENTED
    oversized = _raw_call(ctx, "SignBlob", b"\x12\x84\x80\x80\x01" + b"x" * (2 << 20))  # payload, > 1 MiB
    assert oversized.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server answers on as before.
    resp = ctx.client().sign_blob(name=ctx.name(ctx.target), payload=b"still here")
    assert resp.signed_blob


def test_keyless_env_and_status_name_the_grpc_listener(ctx: Ctx) -> None:
    import subprocess

    env = subprocess.run([*KEYLESS, "--data-dir", str(ctx.server.data_dir), "env", "--shell", "dotenv"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert f"KEYLESS_GRPC_ENDPOINT={ctx.endpoint}" in env.splitlines()
    assert ctx.endpoint.startswith("127.0.0.1:")
    status = ctx.server.cli("status").stdout
    assert f"gRPC              {ctx.endpoint}" in status


def test_no_grpc_listener_unless_asked(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        assert "grpc" not in json.loads((srv.data_dir / "endpoints.json").read_text())
    finally:
        srv.stop()


@row("IAMCredentialsClient() over TLS", "api_endpoint: --grpc-port with --tls-cert, ssl channel credentials")
def test_grpc_over_tls_with_the_api_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --tls-cert the gRPC listener speaks TLS with the API's certificate, as the API port does."""
    from keyless.crypto.ca import LocalCA

    ca = LocalCA(tmp_path / "ca")
    ca.ensure()
    cert, key = ca.issue("api", ["127.0.0.1", "localhost"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.cert_path))  # the owner's REST calls and /token
    srv = start_server(tmp_path / "data", "--tls-cert", str(cert), "--tls-key", str(key), "--grpc-port", "0",
                       "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        endpoint = json.loads((srv.data_dir / "endpoints.json").read_text())["grpc"]
        target = srv.create_sa("grpc-tls-target")
        srv.grant(target, f"user:{OWNER_EMAIL}", TOKEN_CREATOR)
        creds = user_credentials.Credentials.from_authorized_user_file(
            str(srv.owner_file), scopes=[CLOUD]).with_token_uri(f"{srv.url}/token")
        channel = grpc.secure_channel(endpoint, grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=ca.cert_path.read_bytes()),
            grpc.metadata_call_credentials(AuthMetadataPlugin(creds, Request()))))
        client = iam_credentials_v1.IAMCredentialsClient(transport=IAMCredentialsGrpcTransport(channel=channel))
        resp = client.sign_blob(name=f"projects/-/serviceAccounts/{target}", payload=b"over tls", **CALL)
        assert resp.key_id and resp.signed_blob
        channel.close()  # (a kept-alive TLS connection of its token refresh would delay the server's stop)
        with grpc.insecure_channel(endpoint) as plain, pytest.raises(grpc.RpcError) as raised:
            plain.unary_unary(f"/{SERVICE}/SignBlob")(b"", timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # no plaintext on a TLS listener
    finally:
        srv.stop()
