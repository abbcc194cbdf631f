"""``google.iam.admin.v1.IAM`` over gRPC: service accounts, their keys and their allow policies.

The messages are the ones google-cloud-iam ships (``google.cloud.iam_admin_v1.types``, proto-plus wrappers whose
``.pb()`` is the protobuf class) and grpc-google-iam-v1's ``google.iam.v1`` policy messages. Each method does what
REST's route does (``keyless.http.service_accounts``): the same core call, the same permission, the same audit entry
(method name, service ``iam.googleapis.com``, request fields). The core takes these requests as REST's body, proto3
JSON: the message is converted to it (``as_json``) and the core's JSON answer parsed back into the response message
(``from_json``), so both wires give the same answer.

Methods keyless serves on no wire (roles, lint, the deprecated signBlob/signJwt of IAM v1) answer UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.cloud.iam_admin_v1 import types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import empty_pb2

from keyless.errors import InvalidArgument
from keyless.grpc.calls import Method, as_json, encode, from_json, service_handler
from keyless.service import audit
from keyless.service.app import Keyless
from keyless.service.core import Caller
from keyless.service.policies import requested_version
from keyless.service.shapes import PUBLIC_KEY_TYPES, created_key_json, key_json, service_account_json

SERVICE = "google.iam.admin.v1.IAM"
IAM = "iam.googleapis.com"  # the audited service, as REST's entries name it
ADMIN = "google.iam.admin.v1."  # the prefix of REST's audited method names

_EMPTY = encode(empty_pb2.Empty())


def _name(message: Any) -> Mapping[str, Any]:
    return {"name": message.name}


def _resource(message: Any) -> Mapping[str, Any]:
    return {"name": message.resource}


def _project(parent: str) -> str:
    """The project of ``projects/{PROJECT}``, the parent of the account collection (REST's path segment)."""
    project = parent.removeprefix("projects/")
    if not parent.startswith("projects/") or not project or "/" in project:
        raise InvalidArgument(f"Invalid form of name: '{parent}'. It must be projects/{{PROJECT}}.", field="name")
    return project


# ---------------------------------------------------------------- service accounts


async def _list_accounts(kl: Keyless, caller: Caller, message: Any) -> bytes:
    accounts, token = await kl.accounts.list_accounts(caller, _project(message.name), message.page_size or None,
                                                      message.page_token or None)
    body: dict[str, Any] = {"accounts": [service_account_json(a) for a in accounts]}
    if token:
        body["nextPageToken"] = token
    return from_json(types.ListServiceAccountsResponse.pb(), body)


async def _get_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.lookup(caller, message.name, "iam.serviceAccounts.get")
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _create_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.create(caller, _project(message.name), as_json(message))
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _update_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    """UpdateServiceAccount: the whole ServiceAccount as the request (REST's legacy ``PUT``; only the display name
    changes)."""
    account = await kl.accounts.patch(caller, message.name, as_json(message), legacy_put=True)
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _patch_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.patch(caller, message.service_account.name, as_json(message))
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _delete_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.delete(caller, message.name)
    return _EMPTY


async def _undelete_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    restored = await kl.accounts.undelete(caller, message.name)
    return from_json(types.UndeleteServiceAccountResponse.pb(), {"restoredAccount": service_account_json(restored)})


async def _enable_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.set_disabled(caller, message.name, False)
    return _EMPTY


async def _disable_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.set_disabled(caller, message.name, True)
    return _EMPTY


# ---------------------------------------------------------------- keys


def _key_resource(unique_id: str, key_id: str) -> None:
    audit.note(resource=f"projects/-/serviceAccounts/{unique_id}/keys/{key_id}")


async def _list_keys(kl: Keyless, caller: Caller, message: Any) -> bytes:
    # Enum values by name, as REST's query has them (a number no name has stays a number, and is refused).
    key_types = [str(t) for t in as_json(message).get("keyTypes", [])]
    account, keys = await kl.accounts.list_keys(caller, message.name, key_types)
    return from_json(types.ListServiceAccountKeysResponse.pb(), {"keys": [key_json(account, k) for k in keys]})


async def _get_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    public_type = str(as_json(message).get("publicKeyType") or "TYPE_NONE")
    if public_type not in PUBLIC_KEY_TYPES:
        raise InvalidArgument(f"Invalid publicKeyType '{public_type}'.", field="public_key_type")
    account, key = await kl.accounts.get_key(caller, message.name)
    return from_json(types.ServiceAccountKey.pb(), key_json(account, key, public_type))


async def _create_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account, key, pem = await kl.accounts.create_key(caller, message.name, as_json(message))
    _key_resource(account.unique_id, key.key_id)
    # The key file's token_uri is keyless's URL: a gRPC client reached keyless itself, not one of Google's hosts.
    return from_json(types.ServiceAccountKey.pb(), created_key_json(account, key, pem, kl.settings.public_url))


async def _upload_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account, key = await kl.accounts.upload_key(caller, message.name, as_json(message))
    _key_resource(account.unique_id, key.key_id)
    return from_json(types.ServiceAccountKey.pb(), key_json(account, key))


async def _delete_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, message.name, "delete")
    return _EMPTY


async def _disable_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, message.name, "disable")
    return _EMPTY


async def _enable_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, message.name, "enable")
    return _EMPTY


# ---------------------------------------------------------------- allow policies


async def _get_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.lookup(caller, message.resource, "iam.serviceAccounts.getIamPolicy")
    policy = await kl.policies.get_for_account(caller, account, message.resource,
                                               requested_version({}, as_json(message)))
    return from_json(policy_pb2.Policy, policy.to_json())


async def _set_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    data = as_json(message)
    audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
    account = await kl.accounts.lookup(caller, message.resource, "iam.serviceAccounts.setIamPolicy")
    policy = await kl.policies.set_for_account(caller, account, message.resource, data)
    return from_json(policy_pb2.Policy, policy.to_json())


async def _test_permissions(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.find(caller, message.resource)
    granted = await kl.policies.test_on_account(caller, account, as_json(message))
    return from_json(iam_policy_pb2.TestIamPermissionsResponse, {"permissions": granted})


METHODS: dict[str, Method] = {
    "ListServiceAccounts": Method(types.ListServiceAccountsRequest.pb(), _list_accounts),
    "GetServiceAccount": Method(types.GetServiceAccountRequest.pb(), _get_account),
    "CreateServiceAccount": Method(types.CreateServiceAccountRequest.pb(), _create_account,
                                   f"{ADMIN}CreateServiceAccount",
                                   lambda m: {"project": m.name.removeprefix("projects/")}),
    # REST's PUT, the legacy update, is audited as a patch.
    "UpdateServiceAccount": Method(types.ServiceAccount.pb(), _update_account, f"{ADMIN}PatchServiceAccount", _name),
    "PatchServiceAccount": Method(types.PatchServiceAccountRequest.pb(), _patch_account,
                                  f"{ADMIN}PatchServiceAccount", lambda m: {"name": m.service_account.name}),
    "DeleteServiceAccount": Method(types.DeleteServiceAccountRequest.pb(), _delete_account,
                                   f"{ADMIN}DeleteServiceAccount", _name),
    "UndeleteServiceAccount": Method(types.UndeleteServiceAccountRequest.pb(), _undelete_account,
                                     f"{ADMIN}UndeleteServiceAccount", _name),
    "EnableServiceAccount": Method(types.EnableServiceAccountRequest.pb(), _enable_account,
                                   f"{ADMIN}EnableServiceAccount", _name),
    "DisableServiceAccount": Method(types.DisableServiceAccountRequest.pb(), _disable_account,
                                    f"{ADMIN}DisableServiceAccount", _name),
    "ListServiceAccountKeys": Method(types.ListServiceAccountKeysRequest.pb(), _list_keys),
    "GetServiceAccountKey": Method(types.GetServiceAccountKeyRequest.pb(), _get_key),
    "CreateServiceAccountKey": Method(types.CreateServiceAccountKeyRequest.pb(), _create_key,
                                      f"{ADMIN}CreateServiceAccountKey", _name),
    "UploadServiceAccountKey": Method(types.UploadServiceAccountKeyRequest.pb(), _upload_key,
                                      f"{ADMIN}UploadServiceAccountKey", _name),
    "DeleteServiceAccountKey": Method(types.DeleteServiceAccountKeyRequest.pb(), _delete_key,
                                      f"{ADMIN}DeleteServiceAccountKey", _name),
    "DisableServiceAccountKey": Method(types.DisableServiceAccountKeyRequest.pb(), _disable_key,
                                       f"{ADMIN}DisableServiceAccountKey", _name),
    "EnableServiceAccountKey": Method(types.EnableServiceAccountKeyRequest.pb(), _enable_key,
                                      f"{ADMIN}EnableServiceAccountKey", _name),
    "GetIamPolicy": Method(iam_policy_pb2.GetIamPolicyRequest, _get_policy),
    "SetIamPolicy": Method(iam_policy_pb2.SetIamPolicyRequest, _set_policy, f"{ADMIN}SetIAMPolicy", _resource),
    "TestIamPermissions": Method(iam_policy_pb2.TestIamPermissionsRequest, _test_permissions),
}

# The service's other methods: keyless serves no roles (custom or predefined), no policy lint and no auditable
# services on any wire, and IAM v1's deprecated signBlob/signJwt are REST-only (IAM Credentials' are served).
NOT_SERVED = ("SignBlob", "SignJwt", "QueryGrantableRoles", "ListRoles", "GetRole", "CreateRole", "UpdateRole",
              "DeleteRole", "UndeleteRole", "QueryTestablePermissions", "QueryAuditableServices", "LintPolicy")


def handlers(keyless: Keyless) -> Iterable[grpc.GenericRpcHandler]:
    """The generic handler of the service, every method over ``keyless``."""
    return [service_handler(keyless, SERVICE, IAM, METHODS, NOT_SERVED)]
