"""Routes under ``/v1/projects/{project}/serviceAccounts``: IAM v1's service accounts, keys and policies.

The credential verbs that share these paths (``generateAccessToken``, ``generateIdToken``, ``signBlob``,
``signJwt``) are answered at the edge by ``keyless.http.credentials``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import InvalidArgument, MethodNotAllowed, NotFound
from keyless.http.common import JSONResponse, api_caller, base_url, keyless_of, read_json, via_google_host
from keyless.http.wire import created_key_json, key_json, service_account_json
from keyless.service import audit
from keyless.service.policies import requested_version

PUBLIC_KEY_TYPES = ("TYPE_NONE", "TYPE_X509_PEM_FILE", "TYPE_RAW_PUBLIC_KEY")
IAM = "iam.googleapis.com"
# Audit method names of the verbs that change something.
AUDITED_VERBS = {
    "disable": "google.iam.admin.v1.DisableServiceAccount",
    "enable": "google.iam.admin.v1.EnableServiceAccount",
    "undelete": "google.iam.admin.v1.UndeleteServiceAccount",
    "setIamPolicy": "google.iam.admin.v1.SetIAMPolicy",
}


async def collection(request: Request) -> Response:
    """``GET`` list, ``POST`` create."""
    kl = keyless_of(request)
    caller = await api_caller(request)
    project = request.path_params["project"]
    if request.method == "GET":
        accounts, token = await kl.accounts.list_accounts(caller, project, request.query_params.get("pageSize"),
                                                 request.query_params.get("pageToken"))
        body: dict[str, object] = {"accounts": [service_account_json(a) for a in accounts]}
        if token:
            body["nextPageToken"] = token
        return JSONResponse(body)
    if request.method == "POST":
        audit.begin("google.iam.admin.v1.CreateServiceAccount", IAM, project=project)
        data = await read_json(request, ("accountId", "serviceAccount"))
        return JSONResponse(service_account_json(await kl.accounts.create(caller, project, data)))
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


def _split_verb(segment: str) -> tuple[str, str | None]:
    name, sep, verb = segment.rpartition(":")
    return (name, verb) if sep and "@" not in verb else (segment, None)


async def member(request: Request) -> Response:
    project = request.path_params["project"]
    rest: str = request.path_params["rest"]
    parts = rest.split("/")
    account, verb = _split_verb(parts[0])
    name = f"projects/{project}/serviceAccounts/{account}"
    if len(parts) == 1:
        if verb is None:
            return await _account(request, name)
        return await _account_verb(request, name, verb)
    if parts[1] == "allowedLocations" and len(parts) == 2 and verb is None:
        return await _allowed_locations(request, name)
    keys_segment, keys_verb = _split_verb(parts[1])
    if keys_segment != "keys" or verb is not None:
        raise NotFound(f"The requested URL {request.url.path} was not found on this server.")
    if len(parts) == 2:
        return await _keys(request, name, keys_verb)
    if len(parts) == 3:
        key_id, key_verb = _split_verb(parts[2])
        return await _key(request, f"{name}/keys/{key_id}", key_verb)
    raise NotFound(f"The requested URL {request.url.path} was not found on this server.")


async def _account(request: Request, name: str) -> Response:
    if request.method in ("PATCH", "PUT", "DELETE"):
        method = "DeleteServiceAccount" if request.method == "DELETE" else "PatchServiceAccount"
        audit.begin(f"google.iam.admin.v1.{method}", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    if request.method == "GET":
        return JSONResponse(service_account_json(await kl.accounts.lookup(caller, name, "iam.serviceAccounts.get")))
    if request.method == "PATCH":
        data = await read_json(request, ("serviceAccount", "updateMask"))
        return JSONResponse(service_account_json(await kl.accounts.patch(caller, name, data)))
    if request.method == "PUT":
        data = await read_json(request)
        return JSONResponse(service_account_json(await kl.accounts.patch(caller, name, data, legacy_put=True)))
    if request.method == "DELETE":
        await kl.accounts.delete(caller, name)
        return JSONResponse({})
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def _account_verb(request: Request, name: str, verb: str) -> Response:
    if request.method != "POST":
        raise MethodNotAllowed(f"Method {request.method} is not allowed for :{verb}; use POST.")
    if verb in AUDITED_VERBS:
        audit.begin(AUDITED_VERBS[verb], IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    if verb in ("disable", "enable"):
        await read_json(request)
        await kl.accounts.set_disabled(caller, name, verb == "disable")
        return JSONResponse({})
    if verb == "undelete":
        await read_json(request)
        restored = await kl.accounts.undelete(caller, name)
        return JSONResponse({"restoredAccount": service_account_json(restored)})
    if verb == "getIamPolicy":
        data = await read_json(request, ("options",))
        account = await kl.accounts.lookup(caller, name, "iam.serviceAccounts.getIamPolicy")
        policy = await kl.policies.get_for_account(caller, account, name,
                                                   requested_version(request.query_params, data))
        return JSONResponse(policy.to_json())
    if verb == "setIamPolicy":
        data = await read_json(request, ("policy", "updateMask"))
        audit.note_request(policy=data.get("policy"), updateMask=data.get("updateMask"))
        account = await kl.accounts.lookup(caller, name, "iam.serviceAccounts.setIamPolicy")
        return JSONResponse((await kl.policies.set_for_account(caller, account, name, data)).to_json())
    if verb == "testIamPermissions":
        data = await read_json(request, ("permissions",))
        granted = await kl.policies.test_on_account(caller, await kl.accounts.find(caller, name), data)
        return JSONResponse({"permissions": granted} if granted else {})
    raise NotFound(f"Unknown method :{verb}.")


async def _allowed_locations(request: Request, name: str) -> Response:
    if request.method != "GET":
        raise MethodNotAllowed("Use GET.")
    # keyless has no regional access boundaries: every location is allowed, for any account. A missing account
    # gets the same answer, unless the caller may learn that it is missing (Accounts.find).
    await keyless_of(request).accounts.find(await api_caller(request), name)
    return JSONResponse({"locations": [], "encodedLocations": "0x0"})


async def _keys(request: Request, name: str, verb: str | None) -> Response:
    if request.method == "POST":
        method = "UploadServiceAccountKey" if verb == "upload" else "CreateServiceAccountKey"
        audit.begin(f"google.iam.admin.v1.{method}", IAM, name=name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    if verb == "upload" and request.method == "POST":
        account, key = await kl.accounts.upload_key(caller, name, await read_json(request, ("publicKeyData",)))
        audit.note(resource=f"projects/-/serviceAccounts/{account.unique_id}/keys/{key.key_id}")
        return JSONResponse(key_json(account, key))
    if verb is not None:
        raise NotFound(f"Unknown method :{verb}.")
    if request.method == "GET":
        key_types = request.query_params.getlist("keyTypes")
        account, keys = await kl.accounts.list_keys(caller, name, key_types)
        return JSONResponse({"keys": [key_json(account, k) for k in keys]})
    if request.method == "POST":
        data = await read_json(request, ("privateKeyType", "keyAlgorithm"))
        account, key, pem = await kl.accounts.create_key(caller, name, data)
        audit.note(resource=f"projects/-/serviceAccounts/{account.unique_id}/keys/{key.key_id}")
        base = None if via_google_host(request) else base_url(request)
        return JSONResponse(created_key_json(account, key, pem, base))
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")


async def _key(request: Request, key_name: str, verb: str | None) -> Response:
    if request.method != "GET":
        action = {"disable": "Disable", "enable": "Enable"}.get(verb or "", "Delete")
        audit.begin(f"google.iam.admin.v1.{action}ServiceAccountKey", IAM, name=key_name)
    kl = keyless_of(request)
    caller = await api_caller(request)
    if verb is None and request.method == "GET":
        public_type = request.query_params.get("publicKeyType") or "TYPE_NONE"
        if public_type not in PUBLIC_KEY_TYPES:
            raise InvalidArgument(f"Invalid publicKeyType '{public_type}'.", field="public_key_type")
        account, key = await kl.accounts.get_key(caller, key_name)
        return JSONResponse(key_json(account, key, public_type))
    if verb is None and request.method == "DELETE":
        await kl.accounts.change_key(caller, key_name, "delete")
        return JSONResponse({})
    if verb in ("disable", "enable") and request.method == "POST":
        await read_json(request, ("serviceAccountKeyDisableReason", "extendedStatusMessage"))
        await kl.accounts.change_key(caller, key_name, verb)
        return JSONResponse({})
    raise MethodNotAllowed(f"Method {request.method} is not allowed here.")
