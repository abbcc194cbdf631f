"""Routes under ``/v1/projects/{project}/serviceAccounts``: IAM v1's service accounts, keys and policies, one
handler per operation (``keyless.http.app`` routes to them).

The credential verbs that share these paths (``generateAccessToken``, ``generateIdToken``, ``signBlob``,
``signJwt``) are answered at the edge by ``keyless.http.credentials``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import InvalidArgument
from keyless.http.common import JSONResponse, api_caller, base_url, keyless_of, read_json, via_google_host
from keyless.http.wire import created_key_json, key_json, service_account_json
from keyless.service import audit
from keyless.service.policies import requested_version

PUBLIC_KEY_TYPES = ("TYPE_NONE", "TYPE_X509_PEM_FILE", "TYPE_RAW_PUBLIC_KEY")
IAM = "iam.googleapis.com"


def _account_name(request: Request) -> str:
    return f"projects/{request.path_params['project']}/serviceAccounts/{request.path_params['account']}"


def _key_name(request: Request) -> str:
    return f"{_account_name(request)}/keys/{request.path_params['key']}"


async def list_accounts(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    query = request.query_params
    accounts, token = await kl.accounts.list_accounts(caller, request.path_params["project"], query.get("pageSize"),
                                                      query.get("pageToken"))
    body: dict[str, object] = {"accounts": [service_account_json(a) for a in accounts]}
    if token:
        body["nextPageToken"] = token
    return JSONResponse(body)


async def create_account(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    project = request.path_params["project"]
    audit.begin("google.iam.admin.v1.CreateServiceAccount", IAM, project=project)
    data = await read_json(request, ("accountId", "serviceAccount"))
    return JSONResponse(service_account_json(await kl.accounts.create(caller, project, data)))


async def get_account(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    account = await kl.accounts.lookup(caller, _account_name(request), "iam.serviceAccounts.get")
    return JSONResponse(service_account_json(account))


async def patch_account(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.PatchServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("serviceAccount", "updateMask"))
    return JSONResponse(service_account_json(await kl.accounts.patch(caller, name, data)))


async def update_account(request: Request) -> Response:
    """IAM v1's deprecated ``PUT`` (``serviceAccounts.update``)."""
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.PatchServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request)
    return JSONResponse(service_account_json(await kl.accounts.patch(caller, name, data, legacy_put=True)))


async def delete_account(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.DeleteServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    await kl.accounts.delete(await api_caller(request), name)
    return JSONResponse({})


async def _set_account_disabled(request: Request, disabled: bool) -> Response:
    name = _account_name(request)
    audit.begin(f"google.iam.admin.v1.{'Disable' if disabled else 'Enable'}ServiceAccount", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request)
    await kl.accounts.set_disabled(caller, name, disabled)
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
    restored = await kl.accounts.undelete(caller, name)
    return JSONResponse({"restoredAccount": service_account_json(restored)})


async def get_iam_policy(request: Request) -> Response:
    name = _account_name(request)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("options",))
    account = await kl.accounts.lookup(caller, name, "iam.serviceAccounts.getIamPolicy")
    policy = await kl.policies.get_for_account(caller, account, name, requested_version(request.query_params, data))
    return JSONResponse(policy.to_json())


async def set_iam_policy(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.SetIAMPolicy", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("policy", "updateMask"))
    audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
    account = await kl.accounts.lookup(caller, name, "iam.serviceAccounts.setIamPolicy")
    return JSONResponse((await kl.policies.set_for_account(caller, account, name, data)).to_json())


async def check_iam_permissions(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("permissions",))
    granted = await kl.policies.test_on_account(caller, await kl.accounts.find(caller, _account_name(request)), data)
    return JSONResponse({"permissions": granted} if granted else {})


async def allowed_locations(request: Request) -> Response:
    # keyless has no regional access boundaries: every location is allowed, for any account. A missing account
    # gets the same answer, unless the caller may learn that it is missing (Accounts.find).
    await keyless_of(request).accounts.find(await api_caller(request), _account_name(request))
    return JSONResponse({"locations": [], "encodedLocations": "0x0"})


async def list_keys(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    account, keys = await kl.accounts.list_keys(caller, _account_name(request),
                                                request.query_params.getlist("keyTypes"))
    return JSONResponse({"keys": [key_json(account, k) for k in keys]})


async def create_key(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.CreateServiceAccountKey", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    data = await read_json(request, ("privateKeyType", "keyAlgorithm"))
    account, key, pem = await kl.accounts.create_key(caller, name, data)
    audit.note(resource=f"projects/-/serviceAccounts/{account.unique_id}/keys/{key.key_id}")
    base = None if via_google_host(request) else base_url(request)
    return JSONResponse(created_key_json(account, key, pem, base))


async def upload_key(request: Request) -> Response:
    name = _account_name(request)
    audit.begin("google.iam.admin.v1.UploadServiceAccountKey", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    account, key = await kl.accounts.upload_key(caller, name, await read_json(request, ("publicKeyData",)))
    audit.note(resource=f"projects/-/serviceAccounts/{account.unique_id}/keys/{key.key_id}")
    return JSONResponse(key_json(account, key))


async def get_key(request: Request) -> Response:
    kl = keyless_of(request)
    caller = await api_caller(request)
    public_type = request.query_params.get("publicKeyType") or "TYPE_NONE"
    if public_type not in PUBLIC_KEY_TYPES:
        raise InvalidArgument(f"Invalid publicKeyType '{public_type}'.", field="public_key_type")
    account, key = await kl.accounts.get_key(caller, _key_name(request))
    return JSONResponse(key_json(account, key, public_type))


async def delete_key(request: Request) -> Response:
    key_name = _key_name(request)
    audit.begin("google.iam.admin.v1.DeleteServiceAccountKey", IAM, name=key_name)
    kl = keyless_of(request)
    await kl.accounts.change_key(await api_caller(request), key_name, "delete")
    return JSONResponse({})


async def _change_key(request: Request, verb: str) -> Response:
    key_name = _key_name(request)
    audit.begin(f"google.iam.admin.v1.{verb.capitalize()}ServiceAccountKey", IAM, name=key_name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    await read_json(request, ("serviceAccountKeyDisableReason", "extendedStatusMessage"))
    await kl.accounts.change_key(caller, key_name, verb)
    return JSONResponse({})


async def disable_key(request: Request) -> Response:
    return await _change_key(request, "disable")


async def enable_key(request: Request) -> Response:
    return await _change_key(request, "enable")
