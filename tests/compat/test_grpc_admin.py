"""google-cloud-iam's ``iam_admin_v1.IAMClient`` and google-cloud-resource-manager's ``ProjectsClient`` on their
default transport, gRPC, against ``keyless serve --grpc-port``.

The clients are the unmodified libraries: their gRPC transport over an insecure channel to the listener, as Google
documents for emulators, with the caller's access token in each call's ``authorization`` metadata. What a call
changes is read back over REST, key files are used with google-auth, errors are read from the status details, and
the audit entries of gRPC calls are compared with those of the same calls over REST.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.api_core import exceptions as api_exceptions
from google.auth.transport.requests import Request
from google.cloud import iam_admin_v1, resourcemanager_v3
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcTransport
from google.cloud.resourcemanager_v3.services.projects.transports import ProjectsGrpcTransport
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.oauth2 import service_account
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from google.type import expr_pb2
from grpc_status import rpc_status

from tests.compat.grpc_support import CALL, Authorized
from tests.conftest import CLOUD, Server, start_server

GAPIC = f"google-cloud-iam {version('google-cloud-iam')}"
RESOURCE_MANAGER = f"google-cloud-resource-manager {version('google-cloud-resource-manager')}"
DIRECT = "api_endpoint: --grpc-port, insecure channel"
PROJECT = "keyless-dev"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"


def row(call: str, client: str = GAPIC) -> pytest.MarkDecorator:
    return pytest.mark.compat(section="2.1", client=client, call=call, route=DIRECT)


@dataclass
class Ctx:
    server: Server
    endpoint: str  # host:port of the gRPC listener
    denied_token: str  # a service account's token: it holds no role anywhere

    def iam(self, token: str | None = None) -> Any:
        channel = grpc.insecure_channel(self.endpoint)
        return Authorized(iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel)),
                           token or self.server.owner_token)

    def projects(self, token: str | None = None) -> Any:
        channel = grpc.insecure_channel(self.endpoint)
        return Authorized(resourcemanager_v3.ProjectsClient(transport=ProjectsGrpcTransport(channel=channel)),
                           token or self.server.owner_token)

    def rest(self, method: str, path: str, body: Any = None, token: str | None = "owner") -> requests.Response:
        headers = {} if token is None else {
            "Authorization": f"Bearer {self.server.owner_token if token == 'owner' else token}"}
        return requests.request(method, f"{self.server.url}{path}", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    base = tmp_path_factory.mktemp("grpc-admin")
    srv = start_server(base / "data", "--grpc-port", "0", "--proxy-port", "-1", "--metadata-port", "-1")
    try:
        endpoint = json.loads((srv.data_dir / "endpoints.json").read_text())["grpc"]
        denied = srv.create_sa("grpc-admin-denied")
        creds = service_account.Credentials.from_service_account_file(
            str(srv.key_file(denied, base / "denied.json")), scopes=[CLOUD])
        creds.refresh(Request())
        yield Ctx(srv, endpoint, str(creds.token))
    finally:
        srv.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def account_name(email: str, project: str = "-") -> str:
    return f"projects/{project}/serviceAccounts/{email}"


def audit_entries(ctx: Ctx, method: str) -> list[dict[str, Any]]:
    entries = ctx.server.owner("GET", "/v1/auditLog?pageSize=1000")["entries"]
    return [e["protoPayload"] for e in entries if e["protoPayload"]["methodName"] == method]


def wire_neutral(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what differs between two wires by nature (the caller's address and user agent)."""
    return {key: value for key, value in entry.items() if key != "requestMetadata"}


def error_info(exc: api_exceptions.GoogleAPICallError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc.response)
    assert status is not None, "no google.rpc.Status in the trailers"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def self_signed_certificate() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpc-upload")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------- service accounts


@row("iam_admin_v1.IAMClient() service account lifecycle: create, get, list (pages), patch, disable/enable, "
     "delete/undelete")
def test_account_lifecycle(ctx: Ctx) -> None:
    iam = ctx.iam()
    account_id = new_id("grpc-life")
    created = iam.create_service_account(name=f"projects/{PROJECT}", account_id=account_id,
                                         service_account=iam_admin_v1.ServiceAccount(display_name="Before"))
    assert created.email == f"{account_id}@{PROJECT}.iam.gserviceaccount.com"
    assert created.display_name == "Before" and created.project_id == PROJECT and created.unique_id
    name = account_name(created.email)
    assert iam.get_service_account(name=name) == created
    assert ctx.rest("GET", f"/v1/{name}").json()["uniqueId"] == created.unique_id

    # Several pages: the pager asks for the next ones with the page token keyless answered.
    for _ in range(2):
        iam.create_service_account(name=f"projects/{PROJECT}", account_id=new_id("grpc-page"))
    pager = iam.list_service_accounts(request={"name": f"projects/{PROJECT}", "page_size": 2})
    pages = list(pager.pages)
    assert len(pages) >= 2 and all(len(page.accounts) <= 2 for page in pages)
    listed = [account.email for page in pages for account in page.accounts]
    assert created.email in listed and len(listed) == len(set(listed))
    rest_listed = ctx.rest("GET", f"/v1/projects/{PROJECT}/serviceAccounts?pageSize=100").json()["accounts"]
    assert sorted(listed) == sorted(a["email"] for a in rest_listed)

    patched = iam.patch_service_account(request=iam_admin_v1.PatchServiceAccountRequest(
        service_account=iam_admin_v1.ServiceAccount(name=name, display_name="After"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"])))
    assert patched.display_name == "After"
    updated = iam.update_service_account(request=iam_admin_v1.ServiceAccount(name=name, display_name="Again"))
    assert updated.display_name == "Again"
    assert ctx.rest("GET", f"/v1/{name}").json()["displayName"] == "Again"

    iam.disable_service_account(request={"name": name})
    assert iam.get_service_account(name=name).disabled is True
    iam.enable_service_account(request={"name": name})
    assert iam.get_service_account(name=name).disabled is False

    iam.delete_service_account(name=name)
    with pytest.raises(api_exceptions.NotFound):
        iam.get_service_account(name=account_name(created.email, PROJECT))
    restored = iam.undelete_service_account(request={"name": account_name(created.unique_id)})
    assert restored.restored_account.email == created.email
    assert iam.get_service_account(name=name).unique_id == created.unique_id

    [entry] = audit_entries(ctx, "google.iam.admin.v1.UndeleteServiceAccount")[-1:]
    assert entry["serviceName"] == "iam.googleapis.com"
    assert entry["request"] == {"name": account_name(created.unique_id)}
    assert "grpc-python" in entry["requestMetadata"]["callerSuppliedUserAgent"]


# ---------------------------------------------------------------- keys


@row("iam_admin_v1.IAMClient() keys: create (a key file google-auth uses), list, get, disable/enable, delete, "
     "upload")
def test_keys(ctx: Ctx) -> None:
    iam = ctx.iam()
    email = ctx.server.create_sa(new_id("grpc-keys"))
    name = account_name(email)
    key = iam.create_service_account_key(name=name)
    assert key.private_key_type == iam_admin_v1.ServiceAccountPrivateKeyType.TYPE_GOOGLE_CREDENTIALS_FILE
    info = json.loads(key.private_key_data)  # the key file itself: bytes on this wire, no base64
    assert info["client_email"] == email and key.name.endswith(f"/keys/{info['private_key_id']}")
    assert info["token_uri"] == f"{ctx.server.url}/token"
    creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD])
    creds.refresh(Request())  # at keyless
    tokeninfo = requests.get(f"{ctx.server.url}/oauth2/v3/tokeninfo", params={"access_token": creds.token},
                             timeout=10).json()
    assert tokeninfo["email"] == email

    listed = iam.list_service_account_keys(
        name=name, key_types=[iam_admin_v1.ListServiceAccountKeysRequest.KeyType.USER_MANAGED]).keys
    assert [k.name for k in listed] == [key.name]
    assert not listed[0].private_key_data
    got = iam.get_service_account_key(name=key.name,
                                      public_key_type=iam_admin_v1.ServiceAccountPublicKeyType.TYPE_X509_PEM_FILE)
    certificate = x509.load_pem_x509_certificate(got.public_key_data)  # the PEM itself
    assert got.valid_before_time.timestamp() == pytest.approx(certificate.not_valid_after_utc.timestamp())

    iam.disable_service_account_key(name=key.name)
    assert iam.get_service_account_key(name=key.name).disabled is True
    iam.enable_service_account_key(name=key.name)
    assert iam.get_service_account_key(name=key.name).disabled is False
    iam.delete_service_account_key(name=key.name)
    with pytest.raises(api_exceptions.NotFound):
        iam.get_service_account_key(name=key.name)

    uploaded = iam.upload_service_account_key(request={"name": name, "public_key_data": self_signed_certificate()})
    assert uploaded.key_origin == iam_admin_v1.ServiceAccountKeyOrigin.USER_PROVIDED
    rest_keys = ctx.rest("GET", f"/v1/{name}/keys?keyTypes=USER_MANAGED").json()["keys"]
    assert [k["name"] for k in rest_keys] == [uploaded.name]

    [entry] = audit_entries(ctx, "google.iam.admin.v1.UploadServiceAccountKey")[-1:]
    assert entry["request"] == {"name": name}
    assert entry["resourceName"].endswith(f"/keys/{uploaded.name.rsplit('/', 1)[1]}")


# ---------------------------------------------------------------- policies


@row("iam_admin_v1.IAMClient() policies: get/set with etags (stale: ABORTED), conditional binding (version 3), "
     "testIamPermissions")
def test_policies(ctx: Ctx) -> None:
    iam = ctx.iam()
    target = ctx.server.create_sa(new_id("grpc-pol"))
    member = f"serviceAccount:{ctx.server.create_sa(new_id('grpc-mem'))}"
    resource = account_name(target)
    first = iam.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    assert not first.bindings and first.etag

    binding = policy_pb2.Binding(role=TOKEN_CREATOR, members=[member])
    second = iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=resource, policy=policy_pb2.Policy(bindings=[binding], etag=first.etag)))
    assert second.etag != first.etag and list(second.bindings[0].members) == [member]
    with pytest.raises(api_exceptions.Aborted):  # the etag read before the change
        iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
            resource=resource, policy=policy_pb2.Policy(bindings=[], etag=first.etag)))

    condition = expr_pb2.Expr(title="until 2999", expression='request.time < timestamp("2999-01-01T00:00:00Z")')
    conditional = policy_pb2.Binding(role=TOKEN_CREATOR, members=[member], condition=condition)
    third = iam.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=resource, policy=policy_pb2.Policy(version=3, bindings=[conditional], etag=second.etag)))
    assert third.version == 3 and third.bindings[0].condition.expression == condition.expression
    read = iam.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(
        resource=resource, options=options_pb2.GetPolicyOptions(requested_policy_version=3)))
    assert read == third
    with pytest.raises(api_exceptions.InvalidArgument, match="requestedPolicyVersion"):
        iam.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    rest = ctx.rest("POST", f"/v1/{resource}:getIamPolicy?options.requestedPolicyVersion=3").json()
    assert rest["bindings"][0]["condition"]["title"] == "until 2999"
    assert base64.b64decode(rest["etag"]) == third.etag  # bytes on this wire, base64 in JSON

    granted = iam.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
        resource=resource, permissions=["iam.serviceAccounts.get", "iam.serviceAccounts.delete", "no.such.one"]))
    assert list(granted.permissions) == ["iam.serviceAccounts.get", "iam.serviceAccounts.delete"]
    none = ctx.iam(ctx.denied_token).test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
        resource=resource, permissions=["iam.serviceAccounts.get"]))
    assert list(none.permissions) == []

    [entry] = audit_entries(ctx, "google.iam.admin.v1.SetIAMPolicy")[-1:]
    assert entry["request"]["name"] == resource
    assert entry["request"]["policy"]["bindings"][0]["condition"]["title"] == "until 2999"


# ---------------------------------------------------------------- errors


@row("iam_admin_v1.IAMClient() denial: PERMISSION_DENIED with ErrorInfo")
def test_a_denial_carries_error_info(ctx: Ctx) -> None:
    target = ctx.server.create_sa(new_id("grpc-deny"))
    denied = ctx.iam(ctx.denied_token)
    with pytest.raises(api_exceptions.PermissionDenied) as raised:
        denied.get_service_account(name=account_name(target))
    exc = raised.value
    assert exc.reason == "IAM_PERMISSION_DENIED" and exc.domain == "iam.googleapis.com"
    info = error_info(exc)
    assert info.metadata["permission"] == "iam.serviceAccounts.get"
    assert info.metadata["resource"] == account_name(target)

    with pytest.raises(api_exceptions.PermissionDenied):
        denied.disable_service_account(request={"name": account_name(target)})
    [entry] = audit_entries(ctx, "google.iam.admin.v1.DisableServiceAccount")[-1:]
    assert entry["status"]["code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert entry["authorizationInfo"][-1] == {"permission": "iam.serviceAccounts.disable",
                                              "resource": entry["resourceName"], "granted": False}
    assert ctx.rest("GET", f"/v1/{account_name(target)}").json().get("disabled") is None  # nothing changed


@row("iam_admin_v1.IAMClient() a method keyless does not serve: UNIMPLEMENTED")
def test_methods_keyless_does_not_serve_are_unimplemented(ctx: Ctx) -> None:
    with pytest.raises(api_exceptions.MethodNotImplemented, match="keyless does not serve") as raised:
        ctx.iam().list_roles(request=iam_admin_v1.ListRolesRequest())
    assert "google.iam.admin.v1.IAM/ListRoles" in raised.value.message
    with pytest.raises(api_exceptions.MethodNotImplemented, match="keyless does not serve"):
        ctx.projects().create_project(project=resourcemanager_v3.Project(project_id="grpc-new"))


def test_unauthenticated_and_malformed_calls(ctx: Ctx) -> None:
    channel = grpc.insecure_channel(ctx.endpoint)
    client = iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
    with pytest.raises(api_exceptions.Unauthenticated):
        client.get_service_account(name=account_name(f"x@{PROJECT}.iam.gserviceaccount.com"), **CALL)
    with grpc.insecure_channel(ctx.endpoint) as raw:
        call = raw.unary_unary("/google.iam.admin.v1.IAM/CreateServiceAccount")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff", metadata=[("authorization", f"Bearer {ctx.server.owner_token}")], timeout=20)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff", timeout=20)  # the caller first, as on REST
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------- the same audit entries as REST


def test_audit_entries_match_rest(ctx: Ctx) -> None:
    """The same change over both wires leaves the same entry (but for the caller's address and user agent)."""
    email = ctx.server.create_sa(new_id("grpc-parity"))
    name = account_name(email)
    method = "google.iam.admin.v1.DisableServiceAccount"
    ctx.iam().disable_service_account(request={"name": name})
    [over_grpc] = audit_entries(ctx, method)[-1:]
    assert ctx.rest("POST", f"/v1/{name}:disable", {}).status_code == 200
    [over_rest] = audit_entries(ctx, method)[-1:]
    assert wire_neutral(over_grpc) == wire_neutral(over_rest)
    assert over_grpc["authorizationInfo"][0]["permission"] == "iam.serviceAccounts.disable"

    # Refused before anything is decided (no caller): recorded alike, with the name.
    method = "google.iam.admin.v1.DeleteServiceAccount"
    channel = grpc.insecure_channel(ctx.endpoint)
    with pytest.raises(api_exceptions.Unauthenticated):
        iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel)).delete_service_account(name=name, **CALL)
    [over_grpc] = audit_entries(ctx, method)[-1:]
    assert ctx.rest("DELETE", f"/v1/{name}", token=None).status_code == 401
    [over_rest] = audit_entries(ctx, method)[-1:]
    assert wire_neutral(over_grpc) == wire_neutral(over_rest)
    assert over_grpc["request"] == {"name": name}
    assert over_grpc["status"]["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]

    # A project's policy set to the same bindings over both wires.
    policy = ctx.rest("POST", f"/v3/projects/{PROJECT}:getIamPolicy", {}).json()
    bindings = policy["bindings"]
    ctx.projects().set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(
        resource=f"projects/{PROJECT}", policy=policy_pb2.Policy(
            version=1, bindings=[policy_pb2.Binding(role=b["role"], members=b["members"]) for b in bindings])))
    [over_grpc] = audit_entries(ctx, "SetIamPolicy")[-1:]
    r = ctx.rest("POST", f"/v3/projects/{PROJECT}:setIamPolicy", {"policy": {"version": 1, "bindings": bindings}})
    assert r.status_code == 200, r.text
    [over_rest] = audit_entries(ctx, "SetIamPolicy")[-1:]
    assert wire_neutral(over_grpc) == wire_neutral(over_rest)
    assert over_grpc["serviceName"] == "cloudresourcemanager.googleapis.com"


# ---------------------------------------------------------------- Resource Manager v3 Projects


@row("ProjectsClient() get_project, get/set/test IAM policy", RESOURCE_MANAGER)
def test_projects(ctx: Ctx) -> None:
    projects = ctx.projects()
    rest = ctx.rest("GET", f"/v3/projects/{PROJECT}").json()
    got = projects.get_project(name=f"projects/{PROJECT}")
    assert got.name == rest["name"] and got.project_id == PROJECT
    assert got.state == resourcemanager_v3.Project.State.ACTIVE
    assert projects.get_project(name=rest["name"]) == got  # by number too

    resource = f"projects/{PROJECT}"
    policy = projects.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource))
    assert any(b.role == "roles/owner" and "user:owner@keyless.local" in b.members for b in policy.bindings)
    member = f"serviceAccount:{ctx.server.create_sa(new_id('grpc-proj'))}"
    changed = policy_pb2.Policy()
    changed.CopyFrom(policy)
    changed.bindings.append(policy_pb2.Binding(role="roles/iam.securityReviewer", members=[member]))
    written = projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=changed))
    assert written.etag != policy.etag
    with pytest.raises(api_exceptions.Aborted):
        projects.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=changed))
    rest_policy = ctx.rest("POST", f"/v3/projects/{PROJECT}:getIamPolicy", {}).json()
    assert any(member in b["members"] for b in rest_policy["bindings"])

    granted = projects.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(
        resource=resource, permissions=["resourcemanager.projects.get", "iam.serviceAccounts.create"]))
    assert list(granted.permissions) == ["resourcemanager.projects.get", "iam.serviceAccounts.create"]

    with pytest.raises(api_exceptions.PermissionDenied):
        ctx.projects(ctx.denied_token).get_project(name=resource)
    with pytest.raises(api_exceptions.PermissionDenied):
        projects.get_project(name="projects/no-such-project")


# ---------------------------------------------------------------- malformed requests: one answer on both wires

# Each wire's adapter reads its request (REST's JSON, gRPC's message) into the core's typed request; the rules are
# the core's (or the domain's, for names and policies), so a request that breaks one is refused alike on both:
# (a label, the gRPC method, its message, REST's method, path and body (of the target account when callable), what
# the message says).
_ADMIN = iam_admin_v1.types
MALFORMED: list[tuple[str, str, Any, str, str, Any, str]] = [
    ("account id", "CreateServiceAccount",
     lambda t: _ADMIN.CreateServiceAccountRequest.pb()(name=f"projects/{PROJECT}", account_id="Bad_Id"),
     "POST", lambda t: f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": "Bad_Id"}, "Invalid account id"),
    ("display name length", "CreateServiceAccount",
     lambda t: _ADMIN.CreateServiceAccountRequest.pb()(
         name=f"projects/{PROJECT}", account_id="long-display",
         service_account=_ADMIN.ServiceAccount.pb()(display_name="x" * 101)),
     "POST", lambda t: f"/v1/projects/{PROJECT}/serviceAccounts",
     {"accountId": "long-display", "serviceAccount": {"displayName": "x" * 101}}, "at most 100 bytes"),
    ("page size", "ListServiceAccounts",
     lambda t: _ADMIN.ListServiceAccountsRequest.pb()(name=f"projects/{PROJECT}", page_size=-1),
     "GET", lambda t: f"/v1/projects/{PROJECT}/serviceAccounts?pageSize=-1", None, "must not be negative"),
    ("update mask", "PatchServiceAccount",
     lambda t: _ADMIN.PatchServiceAccountRequest.pb()(
         service_account=_ADMIN.ServiceAccount.pb()(name=account_name(t)),
         update_mask=field_mask_pb2.FieldMask(paths=["email"])),
     "PATCH", lambda t: f"/v1/{account_name(t)}", {"serviceAccount": {}, "updateMask": "email"}, "cannot be updated"),
    ("undelete by email", "UndeleteServiceAccount",
     lambda t: _ADMIN.UndeleteServiceAccountRequest.pb()(name=account_name(t)),
     "POST", lambda t: f"/v1/{account_name(t)}:undelete", {}, "unique id"),
    ("private key type", "CreateServiceAccountKey",
     lambda t: _ADMIN.CreateServiceAccountKeyRequest.pb()(name=account_name(t), private_key_type=1),
     "POST", lambda t: f"/v1/{account_name(t)}/keys", {"privateKeyType": "TYPE_PKCS12_FILE"},
     "privateKeyType TYPE_PKCS12_FILE is not supported"),
    ("key type number", "ListServiceAccountKeys",
     lambda t: _ADMIN.ListServiceAccountKeysRequest.pb()(name=account_name(t), key_types=[7]),
     "GET", lambda t: f"/v1/{account_name(t)}/keys?keyTypes=7", None, "Invalid keyTypes value(s): 7."),
    ("uploaded certificate", "UploadServiceAccountKey",
     lambda t: _ADMIN.UploadServiceAccountKeyRequest.pb()(name=account_name(t), public_key_data=b"not a cert"),
     "POST", lambda t: f"/v1/{account_name(t)}/keys:upload",
     {"publicKeyData": base64.b64encode(b"not a cert").decode()}, "not a base64-encoded PEM X.509 certificate"),
    ("public key type", "GetServiceAccountKey",
     lambda t: _ADMIN.GetServiceAccountKeyRequest.pb()(name=f"{account_name(t)}/keys/abc", public_key_type=9),
     "GET", lambda t: f"/v1/{account_name(t)}/keys/abc?publicKeyType=9", None, "Invalid publicKeyType '9'."),
    ("policy role", "SetIamPolicy",
     lambda t: iam_policy_pb2.SetIamPolicyRequest(resource=account_name(t), policy=policy_pb2.Policy(
         bindings=[policy_pb2.Binding(role="roles/nope", members=[f"serviceAccount:{t}"])])),
     "POST", lambda t: f"/v1/{account_name(t)}:setIamPolicy",
     lambda t: {"policy": {"bindings": [{"role": "roles/nope", "members": [f"serviceAccount:{t}"]}]}},
     "does not exist"),
    ("condition title", "SetIamPolicy",
     lambda t: iam_policy_pb2.SetIamPolicyRequest(resource=account_name(t), policy=policy_pb2.Policy(
         version=3, bindings=[policy_pb2.Binding(role=TOKEN_CREATOR, members=[f"serviceAccount:{t}"],
                                                 condition=expr_pb2.Expr(expression="true"))])),
     "POST", lambda t: f"/v1/{account_name(t)}:setIamPolicy",
     lambda t: {"policy": {"version": 3, "bindings": [{"role": TOKEN_CREATOR, "members": [f"serviceAccount:{t}"],
                                                        "condition": {"expression": "true"}}]}},
     "A condition needs a title."),
    ("policy update mask", "SetIamPolicy",
     lambda t: iam_policy_pb2.SetIamPolicyRequest(resource=account_name(t), policy=policy_pb2.Policy(),
                                                  update_mask=field_mask_pb2.FieldMask(paths=["members"])),
     "POST", lambda t: f"/v1/{account_name(t)}:setIamPolicy", {"policy": {}, "updateMask": "members"},
     "Invalid updateMask field(s): members."),
    ("requested policy version", "GetIamPolicy",
     lambda t: iam_policy_pb2.GetIamPolicyRequest(
         resource=account_name(t), options=options_pb2.GetPolicyOptions(requested_policy_version=2)),
     "POST", lambda t: f"/v1/{account_name(t)}:getIamPolicy", {"options": {"requestedPolicyVersion": 2}},
     "Invalid requestedPolicyVersion 2"),
    ("wildcard permission", "TestIamPermissions",
     lambda t: iam_policy_pb2.TestIamPermissionsRequest(resource=account_name(t), permissions=["iam.*"]),
     "POST", lambda t: f"/v1/{account_name(t)}:testIamPermissions", {"permissions": ["iam.*"]},
     "Permissions with wildcards (iam.*) are not allowed."),
]


@pytest.fixture(scope="module")
def malformed_target(ctx: Ctx) -> str:
    return ctx.server.create_sa(new_id("grpc-malformed"))


@pytest.mark.parametrize(("label", "method", "message", "verb", "path", "body", "says"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_malformed_requests_are_refused_alike_on_both_wires(
        ctx: Ctx, malformed_target: str, label: str, method: str, message: Any, verb: str, path: Any, body: Any,
        says: str) -> None:
    with grpc.insecure_channel(ctx.endpoint) as channel:
        call = channel.unary_unary(f"/google.iam.admin.v1.IAM/{method}")
        with pytest.raises(grpc.RpcError) as raised:
            call(message(malformed_target).SerializeToString(),
                 metadata=[("authorization", f"Bearer {ctx.server.owner_token}")], timeout=20)
    rest = ctx.rest(verb, path(malformed_target), body(malformed_target) if callable(body) else body)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert rest.status_code == 400 and rest.json()["error"]["status"] == "INVALID_ARGUMENT", rest.text
    assert raised.value.details() == rest.json()["error"]["message"]
    assert says in rest.json()["error"]["message"]


@pytest.mark.parametrize(("method", "message", "says"), [
    ("GetServiceAccount", _ADMIN.GetServiceAccountRequest.pb()(name="projects/-/serviceAccounts/"),
     "Invalid form of name"),
    ("DeleteServiceAccountKey", _ADMIN.DeleteServiceAccountKeyRequest.pb()(
        name="projects/-/serviceAccounts/a@b.iam.gserviceaccount.com/keys/"), "Invalid key name"),
    ("SetIamPolicy", lambda t: iam_policy_pb2.SetIamPolicyRequest(resource=account_name(t)), "policy is required."),
    # A path that is not snake_case reaches the core as sent (it was INTERNAL: the JSON conversion raised).
    ("PatchServiceAccount", lambda t: _ADMIN.PatchServiceAccountRequest.pb()(
        service_account=_ADMIN.ServiceAccount.pb()(name=account_name(t)),
        update_mask=field_mask_pb2.FieldMask(paths=["Email"])), "Field(s) Email cannot be updated"),
])
def test_malformed_names_and_missing_fields_over_grpc(ctx: Ctx, malformed_target: str, method: str, message: Any,
                                                      says: str) -> None:
    """What REST's paths cannot carry (an empty account or key id), and a request without its policy."""
    with grpc.insecure_channel(ctx.endpoint) as channel:
        call = channel.unary_unary(f"/google.iam.admin.v1.IAM/{method}")
        sent = message(malformed_target) if callable(message) else message
        with pytest.raises(grpc.RpcError) as raised:
            call(sent.SerializeToString(), metadata=[("authorization", f"Bearer {ctx.server.owner_token}")],
                 timeout=20)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in raised.value.details()
