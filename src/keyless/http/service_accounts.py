"""Routes under ``/v1/projects/{project}/serviceAccounts``: IAM v1's service accounts, keys and policies, one
handler per operation (``keyless.http.app`` routes to them).

Each handler reads the path and the JSON body into the core's typed request (``keyless.service.admin_requests``),
checking only their form (a string, an object, a list of strings, base64, no unknown field), calls the core and
renders its result with ``keyless.service.shapes`` (shared with gRPC's ``keyless.grpc.admin``).

The credential verbs that share these paths (``generateAccessToken``, ``generateIdToken``, ``signBlob``,
``signJwt``) are answered at the edge by ``keyless.http.credentials``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from keyless.domain.fields import check_fields
from keyless.domain.names import AccountRef, KeyRef, parse_account_name, parse_key_name
from keyless.domain.numbers import parse_count
from keyless.domain.policy import update_mask_fields
from keyless.errors import InvalidArgument
from keyless.http.common import JSONResponse, api_caller, base_url, keyless_of, read_json, via_google_host
from keyless.service import audit
from keyless.service.accounts import PUBLIC_KEY_DATA_INVALID
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
from keyless.service.policies import permissions_of, policy_of, requested_version
from keyless.service.shapes import PUBLIC_KEY_TYPES, created_key_json, key_json, service_account_json

IAM = "iam.googleapis.com"
# The ServiceAccount message: output-only fields are accepted on input and ignored, as on Google.
SERVICE_ACCOUNT_FIELDS = ("name", "projectId", "uniqueId", "email", "displayName", "description", "etag",
                          "oauth2ClientId", "disabled")


def _account_name(request: Request) -> str:
    return f"projects/{request.path_params['project']}/serviceAccounts/{request.path_params['account']}"


def _account(request: Request) -> AccountRef:
    return parse_account_name(_account_name(request))


def _key_name(request: Request) -> str:
    return f"{_account_name(request)}/keys/{request.path_params['key']}"


def _key(request: Request) -> KeyRef:
    return parse_key_name(_key_name(request))


def _service_account(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``serviceAccount`` object of a create or patch body ({} when absent), its field names checked."""
    spec = body.get("serviceAccount") or {}
    if not isinstance(spec, Mapping):
        raise InvalidArgument("Invalid value at 'service_account': expected an object.", field="service_account")
    check_fields(spec, SERVICE_ACCOUNT_FIELDS, "service_account")
    return spec


def _text(spec: Mapping[str, Any], field: str, wire: str) -> str:
    value = spec.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value at '{wire}': expected a string.", field=wire)
    return value


def _enum(raw: object) -> str:
    """An enum field of the body: its name as sent ("" when absent, the default); a value that is no name is
    refused by the core, which names it."""
    return str(raw) if raw else ""


async def list_accounts(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    query = request.query_params
    page_size = parse_count(query.get("pageSize"), field="page_size", wire="pageSize")
    page = await kl.accounts.list_accounts(caller, ListServiceAccountsRequest(
        request.path_params["project"], page_size, query.get("pageToken") or ""))
    body: dict[str, object] = {"accounts": [service_account_json(a) for a in page.accounts]}
    if page.next_page_token:
        body["nextPageToken"] = page.next_page_token
    return JSONResponse(body)


async def create_account(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    project = request.path_params["project"]
    audit.begin("google.iam.admin.v1.CreateServiceAccount", IAM, project=project)
    data = await read_json(request, ("accountId", "serviceAccount"))
    account_id = data.get("accountId")
    spec = _service_account(data)
    account = await kl.accounts.create(caller, CreateServiceAccountRequest(
        project, account_id if isinstance(account_id, str) else "",  # not text: refused as missing, by the core
        _text(spec, "displayName", "service_account.display_name"),
        _text(spec, "description", "service_account.description")))
    return JSONResponse(service_account_json(account))


async def get_account(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    account = await kl.accounts.lookup(caller, _account(request), "iam.serviceAccounts.get")
    return JSONResponse(service_account_json(account))


async def patch_account(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.PatchServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("serviceAccount", "updateMask"))
    ref = _account(request)
    spec = _service_account(data)
    mask = data.get("updateMask")
    # A mask that is not text is no mask: the core refuses it as missing.
    fields = tuple(f.strip() for f in mask.split(",") if f.strip()) if isinstance(mask, str) else ()
    # Only the fields the mask names are read, as only they change.
    display_name = (_text(spec, "displayName", "service_account.display_name")
                    if {"displayName", "display_name"} & set(fields) else "")
    description = _text(spec, "description", "service_account.description") if "description" in fields else ""
    account = await kl.accounts.patch(caller, PatchServiceAccountRequest(ref, display_name, description, fields))
    return JSONResponse(service_account_json(account))


async def update_account(request: Request) -> Response:
    """IAM v1's deprecated ``PUT`` (``serviceAccounts.update``): the body is the account; only its display name
    changes."""
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.PatchServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request)
    ref = _account(request)
    check_fields(data, SERVICE_ACCOUNT_FIELDS, "service_account")
    display_name = _text(data, "displayName", "service_account.display_name")
    account = await kl.accounts.patch(caller, PatchServiceAccountRequest(ref, display_name,
                                                                         update_mask=("displayName",)))
    return JSONResponse(service_account_json(account))


async def delete_account(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.DeleteServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await kl.accounts.delete(caller, _account(request))
    return JSONResponse({})


async def _set_account_disabled(request: Request, disabled: bool) -> Response:
    name = _account_name(request)
    audit.begin(f"google.iam.admin.v1.{'Disable' if disabled else 'Enable'}ServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request)
    await kl.accounts.set_disabled(caller, _account(request), disabled)
    return JSONResponse({})


async def disable_account(request: Request) -> Response:
    return await _set_account_disabled(request, True)


async def enable_account(request: Request) -> Response:
    return await _set_account_disabled(request, False)


async def undelete_account(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.UndeleteServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request)
    restored = await kl.accounts.undelete(caller, _account(request))
    return JSONResponse({"restoredAccount": service_account_json(restored)})


async def get_iam_policy(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("options",))
    ref = _account(request)
    policy = await kl.policies.get_for_account(caller, GetIamPolicyRequest(
        ref, requested_version(request.query_params, data)))
    return JSONResponse(policy.to_json())


async def set_iam_policy(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.SetIAMPolicy", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("policy", "updateMask"))
    audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
    ref = _account(request)
    policy = await kl.policies.set_for_account(caller, SetIamPolicyRequest(
        ref, policy_of(data), update_mask_fields(data.get("updateMask"))))
    return JSONResponse(policy.to_json())


async def check_iam_permissions(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("permissions",))
    ref = _account(request)
    granted = await kl.policies.test_on_account(caller, TestIamPermissionsRequest(ref, permissions_of(data)))
    return JSONResponse({"permissions": granted} if granted else {})


async def allowed_locations(request: Request) -> Response:
    # keyless has no regional access boundaries: every location is allowed, for any account. A missing account
    # gets the same answer, unless the caller may learn that it is missing (Accounts.find).
    caller = await api_caller(request)
    await keyless_of(request).accounts.find(caller, _account(request))
    return JSONResponse({"locations": [], "encodedLocations": "0x0"})


async def list_keys(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    found = await kl.accounts.list_keys(caller, ListKeysRequest(
        _account(request), tuple(request.query_params.getlist("keyTypes"))))
    return JSONResponse({"keys": [key_json(found.account, k) for k in found.keys]})


async def create_key(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.CreateServiceAccountKey", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("privateKeyType", "keyAlgorithm"))
    created = await kl.accounts.create_key(caller, CreateKeyRequest(
        _account(request), _enum(data.get("privateKeyType")), _enum(data.get("keyAlgorithm"))))
    audit.note(resource=f"projects/-/serviceAccounts/{created.account.unique_id}/keys/{created.key.key_id}")
    base = None if via_google_host(request) else base_url(request)
    return JSONResponse(created_key_json(created.account, created.key, created.private_key_pem, base))


def _public_key_data(raw: object) -> bytes:
    """The certificate's PEM of an upload's ``publicKeyData`` (base64); b"" when absent, which the core refuses."""
    if not isinstance(raw, str) or not raw:
        return b""
    try:
        pem = base64.b64decode(raw, validate=True)
    except ValueError:
        pem = b""
    if not pem:
        raise InvalidArgument(PUBLIC_KEY_DATA_INVALID, field="public_key_data")
    return pem


async def upload_key(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.UploadServiceAccountKey", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("publicKeyData",))
    uploaded = await kl.accounts.upload_key(caller, UploadKeyRequest(
        _account(request), _public_key_data(data.get("publicKeyData"))))
    audit.note(resource=f"projects/-/serviceAccounts/{uploaded.account.unique_id}/keys/{uploaded.key.key_id}")
    return JSONResponse(key_json(uploaded.account, uploaded.key))


async def get_key(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    public_type = request.query_params.get("publicKeyType") or "TYPE_NONE"
    if public_type not in PUBLIC_KEY_TYPES:
        raise InvalidArgument(f"Invalid publicKeyType '{public_type}'.", field="public_key_type")
    found = await kl.accounts.get_key(caller, _key(request))
    return JSONResponse(key_json(found.account, found.key, public_type))


async def delete_key(request: Request) -> Response:
    key = _key_name(request)
    audit.begin("google.iam.admin.v1.DeleteServiceAccountKey", IAM, name=key)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await kl.accounts.change_key(caller, _key(request), "delete")
    return JSONResponse({})


async def _change_key(request: Request, verb: str) -> Response:
    key = _key_name(request)
    audit.begin(f"google.iam.admin.v1.{verb.capitalize()}ServiceAccountKey", IAM, name=key)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request, ("serviceAccountKeyDisableReason", "extendedStatusMessage"))
    await kl.accounts.change_key(caller, _key(request), verb)
    return JSONResponse({})


async def disable_key(request: Request) -> Response:
    return await _change_key(request, "disable")


async def enable_key(request: Request) -> Response:
    return await _change_key(request, "enable")
