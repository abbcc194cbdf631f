"""``google.iam.admin.v1.IAM`` over gRPC: service accounts, their keys and their allow policies.

The messages are the ones google-cloud-iam ships (``google.cloud.iam_admin_v1.types``, proto-plus wrappers whose
``.pb()`` is the protobuf class) and grpc-google-iam-v1's ``google.iam.v1`` policy messages. Each method does what
REST's route does (``keyless.http.service_accounts``): the message's fields are read into the core's typed request
(``keyless.service.admin_requests``: names parsed once, enums by name, a policy parsed with the domain's rules), the
same core method is called, with the same permission and the same audit entry (method name, service
``iam.googleapis.com``, request fields). The result is rendered through the JSON shape REST sends
(``keyless.service.shapes``) parsed into the response message (``from_json``): the one place the shape of an
account or a key lives, so both wires give the same answer.

Methods keyless serves on no wire (roles, lint, the deprecated signBlob/signJwt of IAM v1) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.cloud.iam_admin_v1 import types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.protobuf import empty_pb2, json_format

from keyless.domain.names import AccountRef, parse_account_name, parse_key_name
from keyless.domain.numbers import parse_count
from keyless.domain.policy import Condition, Policy, build_policy, parse_version
from keyless.errors import InvalidArgument
from keyless.grpc.calls import Method, encode, from_json, service_handler
from keyless.service import audit
from keyless.service.admin_requests import (
    CreateKeyRequest,
    CreateServiceAccountRequest,
    GetIamPolicyRequest,
    ListKeysRequest,
    ListServiceAccountsRequest,
    PatchServiceAccountRequest,
    SetIamPolicyRequest,
    TestIamPermissionsRequest,
    UploadKeyRequest,
)
from keyless.service.app import Keyless
from keyless.service.core import Caller
from keyless.service.shapes import PUBLIC_KEY_TYPES, created_key_json, key_json, service_account_json

SERVICE = "google.iam.admin.v1.IAM"
IAM = "iam.googleapis.com"  # the audited service, as REST's entries name it
ADMIN = "google.iam.admin.v1."  # the prefix of REST's audited method names

_EMPTY = encode(empty_pb2.Empty())
_SNAKE = re.compile(r"_([a-z0-9])")


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


def _account(name: str) -> AccountRef:
    return parse_account_name(name)


def _enum(message: Any, field: str) -> str:
    """An enum field by the name REST's JSON gives it ("" for the default, 0; a number no name has as its digits,
    which the core refuses, naming it)."""
    value = getattr(message, field)
    return _enum_name(message, field, value) if value else ""


def _enum_name(message: Any, field: str, value: int) -> str:
    known = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number.get(value)
    return known.name if known is not None else str(value)


def _mask(paths: Iterable[str]) -> tuple[str, ...]:
    """A FieldMask's paths by the names REST's JSON gives them (``display_name`` -> ``displayName``); a path that
    is not snake_case is left as sent, for the core to accept or refuse."""
    return tuple(_SNAKE.sub(lambda m: m.group(1).upper(), path) for path in paths)


# ---------------------------------------------------------------- service accounts


async def _list_accounts(kl: Keyless, caller: Caller, message: Any) -> bytes:
    project = _project(message.name)
    page_size = parse_count(message.page_size or None, field="page_size", wire="pageSize")
    page = await kl.accounts.list_accounts(caller, ListServiceAccountsRequest(project, page_size, message.page_token))
    body: dict[str, Any] = {"accounts": [service_account_json(a) for a in page.accounts]}
    if page.next_page_token:
        body["nextPageToken"] = page.next_page_token
    return from_json(types.ListServiceAccountsResponse.pb(), body)


async def _get_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = await kl.accounts.lookup(caller, _account(message.name), "iam.serviceAccounts.get")
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _create_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    spec = message.service_account
    account = await kl.accounts.create(caller, CreateServiceAccountRequest(
        _project(message.name), message.account_id, spec.display_name, spec.description))
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _update_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    """UpdateServiceAccount: the whole ServiceAccount as the request (REST's legacy ``PUT``; only the display name
    changes)."""
    account = await kl.accounts.patch(caller, PatchServiceAccountRequest(
        _account(message.name), message.display_name, update_mask=("displayName",)))
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _patch_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    spec = message.service_account
    account = await kl.accounts.patch(caller, PatchServiceAccountRequest(
        _account(spec.name), spec.display_name, spec.description, _mask(message.update_mask.paths)))
    return from_json(types.ServiceAccount.pb(), service_account_json(account))


async def _delete_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.delete(caller, _account(message.name))
    return _EMPTY


async def _undelete_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    restored = await kl.accounts.undelete(caller, _account(message.name))
    return from_json(types.UndeleteServiceAccountResponse.pb(), {"restoredAccount": service_account_json(restored)})


async def _enable_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.set_disabled(caller, _account(message.name), False)
    return _EMPTY


async def _disable_account(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.set_disabled(caller, _account(message.name), True)
    return _EMPTY


# ---------------------------------------------------------------- keys


def _key_resource(unique_id: str, key_id: str) -> None:
    audit.note(resource=f"projects/-/serviceAccounts/{unique_id}/keys/{key_id}")


async def _list_keys(kl: Keyless, caller: Caller, message: Any) -> bytes:
    key_types = tuple(_enum_name(message, "key_types", t) for t in message.key_types)
    found = await kl.accounts.list_keys(caller, ListKeysRequest(_account(message.name), key_types))
    return from_json(types.ListServiceAccountKeysResponse.pb(),
                     {"keys": [key_json(found.account, k) for k in found.keys]})


async def _get_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    public_type = _enum(message, "public_key_type") or "TYPE_NONE"
    if public_type not in PUBLIC_KEY_TYPES:
        raise InvalidArgument(f"Invalid publicKeyType '{public_type}'.", field="public_key_type")
    found = await kl.accounts.get_key(caller, parse_key_name(message.name))
    return from_json(types.ServiceAccountKey.pb(), key_json(found.account, found.key, public_type))


async def _create_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    created = await kl.accounts.create_key(caller, CreateKeyRequest(
        _account(message.name), _enum(message, "private_key_type"), _enum(message, "key_algorithm")))
    _key_resource(created.account.unique_id, created.key.key_id)
    # The key file's token_uri is keyless's URL: a gRPC client reached keyless itself, not one of Google's hosts.
    return from_json(types.ServiceAccountKey.pb(), created_key_json(created.account, created.key,
                                                                    created.private_key_pem, kl.settings.public_url))


async def _upload_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    uploaded = await kl.accounts.upload_key(caller, UploadKeyRequest(_account(message.name), message.public_key_data))
    _key_resource(uploaded.account.unique_id, uploaded.key.key_id)
    return from_json(types.ServiceAccountKey.pb(), key_json(uploaded.account, uploaded.key))


async def _delete_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, parse_key_name(message.name), "delete")
    return _EMPTY


async def _disable_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, parse_key_name(message.name), "disable")
    return _EMPTY


async def _enable_key(kl: Keyless, caller: Caller, message: Any) -> bytes:
    await kl.accounts.change_key(caller, parse_key_name(message.name), "enable")
    return _EMPTY


# ---------------------------------------------------------------- allow policies


def _policy(message: Any) -> Policy:
    """The request's ``google.iam.v1.Policy``, parsed with the domain's rules (``build_policy``)."""
    if not message.HasField("policy"):
        raise InvalidArgument("policy is required.", field="policy")
    sent = message.policy
    return build_policy(sent.version, ((b.role, b.members, _condition(b)) for b in sent.bindings), sent.etag)


def _condition(binding: Any) -> Condition | None:
    if not binding.HasField("condition"):
        return None
    expr = binding.condition
    return Condition(expr.expression, expr.title, expr.description, expr.location)


async def _get_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    account = _account(message.resource)
    version = parse_version(message.options.requested_policy_version, what="requestedPolicyVersion",
                            field="options.requestedPolicyVersion")
    policy = await kl.policies.get_for_account(caller, GetIamPolicyRequest(account, version))
    return from_json(policy_pb2.Policy, policy.to_json())


async def _set_policy(kl: Keyless, caller: Caller, message: Any) -> bytes:
    mask = _mask(message.update_mask.paths) or None
    # The entry records the policy as sent, as REST's JSON has it (before it is parsed: a refused one too).
    audit.note_request(policy=json_format.MessageToDict(message.policy) if message.HasField("policy") else None,
                       updateMask=",".join(mask) if mask else None)
    account = _account(message.resource)
    policy = await kl.policies.set_for_account(caller, SetIamPolicyRequest(account, _policy(message), mask))
    return from_json(policy_pb2.Policy, policy.to_json())


async def _test_permissions(kl: Keyless, caller: Caller, message: Any) -> bytes:
    granted = await kl.policies.test_on_account(caller, TestIamPermissionsRequest(
        _account(message.resource), tuple(message.permissions)))
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
